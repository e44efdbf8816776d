//! `sgemm` against the naive triple loop: transposes through strides, negative strides,
//! alpha/beta, and the degenerate k = 0 and empty cases.

mod common;

use common::{assert_close, random_vec, rng};
use fracture_tensor::{naive, sgemm};

#[test]
fn sgemm_matches_naive_for_every_transpose() {
    let mut r = rng(3);
    let (m, k, n) = (7, 13, 5);
    let a = random_vec(&mut r, m * k);
    let b = random_vec(&mut r, k * n);
    let c0 = random_vec(&mut r, m * n);
    // (rs, cs) for A stored row-major (m x k) or as its transpose (k x m row-major), same for B.
    for (rsa, csa) in [(k as isize, 1), (1, m as isize)] {
        for (rsb, csb) in [(n as isize, 1), (1, k as isize)] {
            for (rsc, csc) in [(n as isize, 1), (1, m as isize)] {
                let mut got = c0.clone();
                let mut want = c0.clone();
                sgemm(
                    m, k, n, 0.5, &a, rsa, csa, &b, rsb, csb, 2.0, &mut got, rsc, csc,
                )
                .unwrap();
                naive::gemm(
                    m, k, n, 0.5, &a, rsa, csa, &b, rsb, csb, 2.0, &mut want, rsc, csc,
                )
                .unwrap();
                assert_close("c", &got, &want, 1e-5, 1e-6);
            }
        }
    }
}

#[test]
fn sgemm_handles_negative_strides() {
    // A read bottom-up: row i of the view is row (m - 1 - i) of the storage.
    let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // 3x2
    let b = [1.0f32, 0.0, 0.0, 1.0]; // identity 2x2
    let mut c = [0.0f32; 6];
    sgemm(3, 2, 2, 1.0, &a, -2, 1, &b, 2, 1, 0.0, &mut c, 2, 1).unwrap();
    assert_eq!(c, [5.0, 6.0, 3.0, 4.0, 1.0, 2.0]);
    let mut want = [0.0f32; 6];
    naive::gemm(3, 2, 2, 1.0, &a, -2, 1, &b, 2, 1, 0.0, &mut want, 2, 1).unwrap();
    assert_eq!(c, want);
}

#[test]
fn sgemm_degenerate_shapes() {
    let mut c = [1.0f32, f32::NAN];
    // k = 0: C = beta * C, and beta = 0 clears NaN.
    sgemm(1, 0, 2, 1.0, &[], 1, 1, &[], 1, 1, 0.0, &mut c, 2, 1).unwrap();
    assert_eq!(c, [0.0, 0.0]);
    let mut c = [2.0f32, 4.0];
    sgemm(1, 0, 2, 1.0, &[], 1, 1, &[], 1, 1, 0.5, &mut c, 2, 1).unwrap();
    assert_eq!(c, [1.0, 2.0]);
    // m = 0: nothing to do, nothing checked.
    sgemm(0, 3, 2, 1.0, &[], 1, 1, &[], 1, 1, 0.0, &mut [], 1, 1).unwrap();
}
