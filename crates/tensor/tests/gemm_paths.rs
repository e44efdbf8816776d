//! Both GEMM paths against the naive f64 triple loop: the AVX-512 kernel called directly
//! (`sgemm_with(GemmBackend::Avx512, ..)`, skipped with a message on CPUs without AVX-512F) and
//! the dispatched `sgemm`, on random shapes (m, k, n in 1..=70, so every ragged edge of the
//! 12 x 32 tile), random layouts (row-major, column-major i.e. transposed, general strides,
//! negative strides for A and B, padded and strided C), alpha/beta including beta = 0 with a
//! NaN-filled C, plus large shapes that cross the kernel's cache blocks. Also checks that the
//! AVX-512 result of an element does not depend on how the product is split into row or column
//! blocks (what makes the convolution's results independent of the thread count), and the
//! backend selection (`sgemm_backend`, `FRACTURE_GEMM`).

mod common;

use common::rng;
use fracture_tensor::{naive, sgemm, sgemm_backend, sgemm_with, GemmBackend};
use proptest::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A strided matrix stored in `data`, element (i, j) at `base + i * rs + j * cs`.
#[derive(Clone, Debug)]
struct Operand {
    data: Vec<f32>,
    rs: isize,
    cs: isize,
}

/// Layout of a `rows x cols` operand: 0 row-major, 1 column-major, 2 general strides
/// (`pad` extra elements per line; `neg_*` flip the sign of a stride).
fn operand(
    r: &mut ChaCha8Rng,
    rows: usize,
    cols: usize,
    layout: u8,
    pad: usize,
    neg_rows: bool,
    neg_cols: bool,
) -> Operand {
    let (rs, cs) = match layout {
        0 => (cols + pad, 1),
        1 => (1, rows + pad),
        _ => (2 * cols + pad + 1, 2),
    };
    let len = (rows - 1) * rs + (cols - 1) * cs + 1;
    let data = (0..len).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let sign = |neg: bool| if neg { -1 } else { 1 };
    Operand {
        data,
        rs: rs as isize * sign(neg_rows),
        cs: cs as isize * sign(neg_cols),
    }
}

/// Indices of the addressed elements of a non-negative-strided `m x n` C.
fn addressed(m: usize, n: usize, rs: isize, cs: isize) -> Vec<usize> {
    let mut v = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            v.push((i as isize * rs + j as isize * cs) as usize);
        }
    }
    v
}

/// Bound on `|alpha * sum_p a_ip b_pj| + |beta c_ij|` per element of C (same layout as C).
#[allow(clippy::too_many_arguments)]
fn magnitude(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &Operand,
    b: &Operand,
    beta: f32,
    c: &Operand,
) -> Vec<f32> {
    let abs = |o: &Operand| Operand {
        data: o.data.iter().map(|v| v.abs()).collect(),
        rs: o.rs,
        cs: o.cs,
    };
    let (aa, ba) = (abs(a), abs(b));
    let mut out: Vec<f32> = c
        .data
        .iter()
        .map(|v| if beta == 0.0 { 0.0 } else { v.abs() })
        .collect();
    let (rsc, csc) = (c.rs, c.cs);
    naive::gemm(
        m,
        k,
        n,
        alpha.abs(),
        &aa.data,
        aa.rs,
        aa.cs,
        &ba.data,
        ba.rs,
        ba.cs,
        beta.abs(),
        &mut out,
        rsc,
        csc,
    )
    .expect("valid");
    out
}

/// Runs one product on `backend` (None: the dispatched `sgemm`) and checks it against the
/// naive loop: addressed elements within `(k + 2) * EPSILON * magnitude` (a worst-case bound
/// for f32 sums of length k: missing or doubled terms, wrong rows/columns or a stale C exceed
/// it), everything else in C untouched bit for bit.
#[allow(clippy::too_many_arguments)]
fn check(
    backend: Option<GemmBackend>,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &Operand,
    b: &Operand,
    beta: f32,
    c: &Operand,
) -> Result<(), String> {
    let mut got = c.data.clone();
    let mut want = c.data.clone();
    let res = match backend {
        Some(be) => sgemm_with(
            be, m, k, n, alpha, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs, beta, &mut got, c.rs,
            c.cs,
        ),
        None => sgemm(
            m, k, n, alpha, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs, beta, &mut got, c.rs, c.cs,
        ),
    };
    res.map_err(|e| format!("sgemm failed: {e}"))?;
    naive::gemm(
        m, k, n, alpha, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs, beta, &mut want, c.rs, c.cs,
    )
    .map_err(|e| format!("naive failed: {e}"))?;
    let mag = magnitude(m, k, n, alpha, a, b, beta, c);
    let tol_factor = (k as f32 + 2.0) * f32::EPSILON;
    let idx = addressed(m, n, c.rs, c.cs);
    let mut is_out = vec![false; got.len()];
    for &i in &idx {
        is_out[i] = true;
        let err = (got[i] - want[i]).abs();
        let tol = tol_factor * mag[i] + 1e-30;
        if err.is_nan() || err > tol {
            return Err(format!(
                "{backend:?} {m}x{k}x{n} a({},{}) b({},{}) c({},{}) alpha {alpha} beta {beta}: \
                 element {i}: got {} want {} (tol {tol})",
                a.rs, a.cs, b.rs, b.cs, c.rs, c.cs, got[i], want[i]
            ));
        }
    }
    for (i, (&g, &o)) in got.iter().zip(&c.data).enumerate() {
        if !is_out[i] && g.to_bits() != o.to_bits() {
            return Err(format!("{backend:?}: element {i} outside C was written"));
        }
    }
    Ok(())
}

/// A C operand (non-negative strides), NaN-filled on its addressed elements when `beta == 0`.
fn c_operand(r: &mut ChaCha8Rng, m: usize, n: usize, layout: u8, pad: usize, beta: f32) -> Operand {
    let mut c = operand(r, m, n, layout, pad, false, false);
    if beta == 0.0 {
        for i in addressed(m, n, c.rs, c.cs) {
            c.data[i] = f32::NAN;
        }
    }
    c
}

fn avx512_or_skip(test: &str) -> bool {
    if GemmBackend::Avx512.is_available() {
        true
    } else {
        println!("skipped {test}: this CPU has no AVX-512F");
        false
    }
}

/// One random case: shape, layouts, pads, signs, alpha/beta choice and data seed.
#[derive(Clone, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    layouts: (u8, u8, u8),
    pads: (usize, usize, usize),
    negs: (bool, bool, bool, bool),
    scalars: u8,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (1usize..=70, 1usize..=70, 1usize..=70),
        (0u8..3, 0u8..3, 0u8..3),
        (0usize..3, 0usize..3, 0usize..3),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        0u8..4,
        any::<u64>(),
    )
        .prop_map(|((m, k, n), layouts, pads, negs, scalars, seed)| Case {
            m,
            k,
            n,
            layouts,
            pads,
            negs,
            scalars,
            seed,
        })
}

impl Case {
    fn build(&self) -> (f32, Operand, Operand, f32, Operand) {
        let mut r = rng(self.seed);
        let (alpha, beta) = match self.scalars {
            0 => (1.0, 0.0),
            1 => (1.0, 1.0),
            2 => (-0.75, 0.0),
            _ => (r.gen_range(-2.0f32..2.0), r.gen_range(-2.0f32..2.0)),
        };
        let (la, lb, lc) = self.layouts;
        let (pa, pb, pc) = self.pads;
        let (n0, n1, n2, n3) = self.negs;
        let a = operand(&mut r, self.m, self.k, la, pa, n0, n1);
        let b = operand(&mut r, self.k, self.n, lb, pb, n2, n3);
        let c = c_operand(&mut r, self.m, self.n, lc, pc, beta);
        (alpha, a, b, beta, c)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn both_paths_match_naive_on_random_shapes_and_layouts(case in cases()) {
        let (alpha, a, b, beta, c) = case.build();
        let (m, k, n) = (case.m, case.k, case.n);
        if GemmBackend::Avx512.is_available() {
            let r = check(Some(GemmBackend::Avx512), m, k, n, alpha, &a, &b, beta, &c);
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
        let r = check(Some(GemmBackend::MatrixMultiply), m, k, n, alpha, &a, &b, beta, &c);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        let r = check(None, m, k, n, alpha, &a, &b, beta, &c);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Splitting C into row blocks or column blocks gives the AVX-512 kernel's result bit for
    /// bit: each element's arithmetic does not depend on its tile, edge or orientation.
    #[test]
    fn avx512_results_do_not_depend_on_the_split(case in cases(), cut in 0.0f64..1.0) {
        if !GemmBackend::Avx512.is_available() {
            return Ok(());
        }
        let (alpha, a, b, beta, c) = case.build();
        let (m, k, n) = (case.m, case.k, case.n);
        let be = GemmBackend::Avx512;
        let mut whole = c.data.clone();
        sgemm_with(be, m, k, n, alpha, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs, beta,
                   &mut whole, c.rs, c.cs).unwrap();
        // Offsets of element (0, 0) (A and B may have negative strides).
        let base = |o: &Operand, rows: usize, cols: usize| -> isize {
            let r = (rows as isize - 1) * o.rs;
            let cc = (cols as isize - 1) * o.cs;
            -(r.min(0) + cc.min(0))
        };
        let (ba, bb) = (base(&a, m, k), base(&b, k, n));
        // Row split at m1: rows 0..m1 and m1..m as two products.
        let m1 = ((m as f64 * cut) as usize).clamp(1, m);
        let mut rows = c.data.clone();
        for (r0, r1) in [(0, m1), (m1, m)] {
            if r1 == r0 {
                continue;
            }
            let a_off = ba + r0 as isize * a.rs;
            let c_off = r0 as isize * c.rs;
            // A view starting at row r0: rebuild a slice whose (0, 0) is that element.
            let sub_a = shifted(&a.data, a_off, r1 - r0, k, a.rs, a.cs);
            sgemm_with(be, r1 - r0, k, n, alpha, &sub_a.0, a.rs, a.cs, &b.data, b.rs, b.cs,
                       beta, &mut rows[c_off as usize..], c.rs, c.cs).unwrap();
        }
        prop_assert!(bits_equal(&rows, &whole), "row split at {m1} differs");
        // Column split at n1.
        let n1 = ((n as f64 * cut) as usize).clamp(1, n);
        let mut cols = c.data.clone();
        for (j0, j1) in [(0, n1), (n1, n)] {
            if j1 == j0 {
                continue;
            }
            let b_off = bb + j0 as isize * b.cs;
            let c_off = j0 as isize * c.cs;
            let sub_b = shifted(&b.data, b_off, k, j1 - j0, b.rs, b.cs);
            sgemm_with(be, m, k, j1 - j0, alpha, &a.data, a.rs, a.cs, &sub_b.0, b.rs, b.cs,
                       beta, &mut cols[c_off as usize..], c.rs, c.cs).unwrap();
        }
        prop_assert!(bits_equal(&cols, &whole), "column split at {n1} differs");
    }
}

/// The smallest sub-slice holding a `rows x cols` view whose element (0, 0) is at `origin`
/// in `data` (as an owned copy, so negative strides keep working), and where (0, 0) is in it.
fn shifted(
    data: &[f32],
    origin: isize,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
) -> (Vec<f32>, isize) {
    let r = (rows as isize - 1) * rs;
    let c = (cols as isize - 1) * cs;
    let lo = origin + r.min(0) + c.min(0);
    let hi = origin + r.max(0) + c.max(0);
    (data[lo as usize..=hi as usize].to_vec(), origin - lo)
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Element (i, j) of an operand whose strides may be negative.
fn at(o: &Operand, rows: usize, cols: usize, i: usize, j: usize) -> f32 {
    let r = (rows as isize - 1) * o.rs;
    let c = (cols as isize - 1) * o.cs;
    let base = -(r.min(0) + c.min(0));
    o.data[(base + i as isize * o.rs + j as isize * o.cs) as usize]
}

/// Large products: every element of the AVX-512 result against `matrixmultiply` (itself checked
/// against the naive loop above) within twice the f32 bound, and 500 random elements against an
/// f64 dot product within the bound. (The full naive loop would take minutes here.)
#[allow(clippy::too_many_arguments)]
fn check_large(
    r: &mut ChaCha8Rng,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &Operand,
    b: &Operand,
    beta: f32,
    c: &Operand,
) -> Result<(), String> {
    let run = |be: GemmBackend, x: &Operand, y: &Operand, al: f32, bt: f32, out: &mut [f32]| {
        sgemm_with(
            be, m, k, n, al, &x.data, x.rs, x.cs, &y.data, y.rs, y.cs, bt, out, c.rs, c.cs,
        )
        .map_err(|e| e.to_string())
    };
    let mut got = c.data.clone();
    run(GemmBackend::Avx512, a, b, alpha, beta, &mut got)?;
    let mut other = c.data.clone();
    run(GemmBackend::MatrixMultiply, a, b, alpha, beta, &mut other)?;
    let abs = |o: &Operand| Operand {
        data: o.data.iter().map(|v| v.abs()).collect(),
        rs: o.rs,
        cs: o.cs,
    };
    let mut mag: Vec<f32> = c
        .data
        .iter()
        .map(|v| if beta == 0.0 { 0.0 } else { v.abs() })
        .collect();
    run(
        GemmBackend::MatrixMultiply,
        &abs(a),
        &abs(b),
        alpha.abs(),
        beta.abs(),
        &mut mag,
    )?;
    let tol_factor = (k as f32 + 2.0) * f32::EPSILON;
    let idx = addressed(m, n, c.rs, c.cs);
    for &i in &idx {
        let err = (got[i] - other[i]).abs();
        if err.is_nan() || err > 2.0 * tol_factor * mag[i] * 1.01 + 1e-30 {
            return Err(format!(
                "{m}x{k}x{n}: element {i}: avx512 {} matrixmultiply {}",
                got[i], other[i]
            ));
        }
    }
    for _ in 0..500 {
        let (i, j) = (r.gen_range(0..m), r.gen_range(0..n));
        let mut acc = 0.0f64;
        for p in 0..k {
            acc += f64::from(at(a, m, k, i, p)) * f64::from(at(b, k, n, p, j));
        }
        let ci = (i as isize * c.rs + j as isize * c.cs) as usize;
        let old = if beta == 0.0 {
            0.0
        } else {
            f64::from(beta) * f64::from(c.data[ci])
        };
        let want = (f64::from(alpha) * acc + old) as f32;
        let err = (got[ci] - want).abs();
        if err.is_nan() || err > tol_factor * mag[ci] * 1.01 + 1e-30 {
            return Err(format!(
                "{m}x{k}x{n}: C({i}, {j}): got {} want {want}",
                got[ci]
            ));
        }
    }
    let mut is_out = vec![false; got.len()];
    idx.iter().for_each(|&i| is_out[i] = true);
    for (i, (&g, &o)) in got.iter().zip(&c.data).enumerate() {
        if !is_out[i] && g.to_bits() != o.to_bits() {
            return Err(format!("element {i} outside C was written"));
        }
    }
    Ok(())
}

/// Shapes of the convolution's three products (forward, weight gradient with B = cols^T,
/// input gradient with A = W^T) for several layers, and sizes that cross the kernel's k-, m- and
/// n-blocks (k > 256, m > 192, n > 1024) with ragged ends.
#[test]
fn avx512_matches_reference_on_large_and_conv_shapes() {
    if !avx512_or_skip("avx512_matches_reference_on_large_and_conv_shapes") {
        return;
    }
    let mut r = rng(11);
    // (m, k, n, layout A, layout B, layout C, beta)
    let shapes: [(usize, usize, usize, u8, u8, u8, f32); 9] = [
        (256, 1152, 1024, 0, 0, 0, 0.0), // forward, large
        (64, 288, 1024, 0, 0, 0, 1.0),   // forward onto a bias
        (32, 2000, 9, 0, 1, 0, 1.0),     // dw of a first layer: n = 9, long k
        (128, 512, 576, 0, 1, 0, 0.0),   // dw
        (576, 128, 512, 1, 0, 0, 0.0),   // dx
        (197, 300, 1061, 0, 0, 0, 0.5),  // every block ragged
        (193, 257, 33, 1, 1, 1, 0.0),    // column-major everything
        (13, 600, 1100, 2, 2, 2, 1.0),   // general strides
        (300, 17, 70, 0, 1, 2, 0.0),     // short k, strided C
    ];
    for (m, k, n, la, lb, lc, beta) in shapes {
        let a = operand(&mut r, m, k, la, 1, false, false);
        let b = operand(&mut r, k, n, lb, 0, false, false);
        let c = c_operand(&mut r, m, n, lc, 2, beta);
        check_large(&mut r, m, k, n, 1.0, &a, &b, beta, &c).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Both backends refuse the same bad calls with the same errors, and never touch C then.
#[test]
fn both_backends_check_arguments_alike() {
    let a = [1.0f32; 6];
    for be in [GemmBackend::MatrixMultiply, GemmBackend::Avx512] {
        if !be.is_available() {
            let mut c = [0.0f32; 4];
            let e = sgemm_with(be, 2, 3, 2, 1.0, &a, 3, 1, &a, 2, 1, 0.0, &mut c, 2, 1)
                .unwrap_err()
                .to_string();
            assert!(e.contains("avx512"), "{e}");
            println!("skipped the AVX-512 half: this CPU has no AVX-512F");
            continue;
        }
        let mut c = [7.0f32; 4];
        // A too short.
        let e = sgemm_with(be, 2, 3, 2, 1.0, &a[..5], 3, 1, &a, 2, 1, 0.0, &mut c, 2, 1);
        assert!(e.unwrap_err().to_string().contains("operand a"));
        // Aliased C.
        let e = sgemm_with(be, 2, 3, 2, 1.0, &a, 3, 1, &a, 2, 1, 0.0, &mut c, 1, 1);
        assert!(e.unwrap_err().to_string().contains("share memory"));
        assert_eq!(c, [7.0; 4]);
        // k = 0 scales C by beta; beta = 0 overwrites NaN.
        let mut c = [f32::NAN, 2.0];
        sgemm_with(be, 1, 0, 2, 1.0, &[], 1, 1, &[], 1, 1, 0.0, &mut c, 2, 1).unwrap();
        assert_eq!(c, [0.0, 0.0]);
        let mut c = [1.0f32, 2.0];
        sgemm_with(be, 1, 0, 2, 1.0, &[], 1, 1, &[], 1, 1, 0.5, &mut c, 2, 1).unwrap();
        assert_eq!(c, [0.5, 1.0]);
    }
}

/// `sgemm_backend` names the active backend, which is available and is the one
/// `GemmBackend::select` picks for this process's `FRACTURE_GEMM`.
#[test]
fn backend_name_matches_the_cpu_and_environment() {
    let name = sgemm_backend();
    assert_eq!(name, GemmBackend::active().name());
    assert!(GemmBackend::active().is_available());
    let value = std::env::var("FRACTURE_GEMM").ok();
    assert_eq!(GemmBackend::active(), GemmBackend::select(value.as_deref()));
    assert_eq!(
        GemmBackend::select(Some("matrixmultiply")),
        GemmBackend::MatrixMultiply
    );
    assert_eq!(
        GemmBackend::select(Some("bogus")),
        GemmBackend::select(None)
    );
    let avx = GemmBackend::select(Some(" avx512 "));
    assert_eq!(
        avx == GemmBackend::Avx512,
        GemmBackend::Avx512.is_available()
    );
}

/// Helper run in a child process by the next test (ignored on its own).
#[test]
#[ignore = "run by env_var_chooses_the_backend in a child process"]
fn print_backend() {
    println!("backend={}", sgemm_backend());
}

/// `FRACTURE_GEMM` is honoured (checked in child processes, since the choice is read once
/// per process): `matrixmultiply` forces the fallback, `avx512` picks the AVX-512 kernel when
/// the CPU has it.
#[test]
fn env_var_chooses_the_backend() {
    let exe = std::env::current_exe().expect("test binary path");
    let avx = if GemmBackend::Avx512.is_available() {
        "avx512"
    } else {
        "matrixmultiply"
    };
    for (value, want) in [("matrixmultiply", "matrixmultiply"), ("avx512", avx)] {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "print_backend", "--ignored", "--nocapture"])
            .env("FRACTURE_GEMM", value)
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!("backend={want}")),
            "FRACTURE_GEMM={value}: {stdout}"
        );
    }
}

/// Convolution forward and backward on the active backend: the same bits in rayon pools of 1,
/// 2 and 3 threads (the AVX-512 kernel must keep the convolution's determinism), and close to
/// the naive convolution. Run with `FRACTURE_GEMM=avx512` in a child process by the next test.
#[test]
#[ignore = "run by convolution_on_avx512_is_deterministic_and_correct in a child process"]
fn convolution_on_active_backend() {
    use fracture_tensor::{conv2d_backward, conv2d_forward, ConvParams, ConvWorkspace};
    println!("backend={}", sgemm_backend());
    let p = ConvParams {
        stride: [1, 1],
        padding: [1, 1],
        ..ConvParams::default()
    };
    // Batch 1 (GEMM split by output channels / rows), batch 9 (batch-parallel, dw by image),
    // first-layer-like (C = 1) and wider layers with several im2col row blocks.
    let cases = [
        ([1, 3, 20, 17], [40, 3, 3, 3]),
        ([9, 1, 24, 24], [16, 1, 3, 3]),
        ([2, 32, 40, 40], [64, 32, 3, 3]),
    ];
    for (ci, (xs, wsh)) in cases.into_iter().enumerate() {
        let mut r = rng(500 + ci as u64);
        let x = common::random_tensor(&mut r, xs);
        let w = common::random_tensor(&mut r, wsh);
        let b = common::random_vec(&mut r, wsh[0]);
        let run = || {
            let mut ws = ConvWorkspace::default();
            let y = conv2d_forward(&x, &w, Some(&b), p, &mut ws).unwrap();
            let dy = common::random_tensor(&mut rng(77), y.shape());
            let g = conv2d_backward(&x, &w, &dy, p, true, &mut ws).unwrap();
            (y, dy, g)
        };
        let mut first: Option<Vec<Vec<f32>>> = None;
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (y, dy, g) = pool.install(run);
            let outs = vec![
                y.as_slice().to_vec(),
                g.dx.as_ref().unwrap().as_slice().to_vec(),
                g.dw.as_slice().to_vec(),
            ];
            match &first {
                None => {
                    let ny = naive::conv2d_forward(&x, &w, Some(&b), p).unwrap();
                    let ng = naive::conv2d_backward(&x, &w, &dy, p, true).unwrap();
                    let wants = [
                        ny.as_slice(),
                        ng.dx.as_ref().unwrap().as_slice(),
                        ng.dw.as_slice(),
                    ];
                    for (k, (got, want)) in outs.iter().zip(wants).enumerate() {
                        common::assert_close(
                            &format!("case {ci} output {k}"),
                            got,
                            want,
                            1e-4,
                            1e-4,
                        );
                    }
                    first = Some(outs);
                }
                Some(want) => {
                    for (k, (got, want)) in outs.iter().zip(want).enumerate() {
                        assert!(
                            bits_equal(got, want),
                            "case {ci}, output {k}: {threads} threads differ from 1 thread"
                        );
                    }
                }
            }
        }
    }
}

/// Runs the previous test in a child process with `FRACTURE_GEMM=avx512` (the default backend
/// is covered by the crate's other convolution tests).
#[test]
fn convolution_on_avx512_is_deterministic_and_correct() {
    if !avx512_or_skip("convolution_on_avx512_is_deterministic_and_correct") {
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "convolution_on_active_backend",
            "--ignored",
            "--nocapture",
        ])
        .env("FRACTURE_GEMM", "avx512")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("backend=avx512"), "{stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// C with negative strides (allowed by `sgemm`): the AVX-512 kernel writes the same elements as
/// the naive loop, in every orientation it may pick.
#[test]
fn avx512_handles_negative_c_strides() {
    if !avx512_or_skip("avx512_handles_negative_c_strides") {
        return;
    }
    let mut r = rng(21);
    for &(m, k, n) in &[(1, 3, 40), (37, 5, 3), (20, 30, 45), (5, 300, 70)] {
        let a = operand(&mut r, m, k, 0, 0, false, false);
        let b = operand(&mut r, k, n, 1, 0, false, false);
        // Row-major and column-major C read backwards in one or both directions.
        for (rsc, csc) in [
            (-(n as isize), 1),
            (n as isize, -1),
            (-(n as isize), -1),
            (-1, -(m as isize)),
        ] {
            let c0: Vec<f32> = (0..m * n).map(|_| r.gen_range(-1.0f32..1.0)).collect();
            let (mut got, mut want) = (c0.clone(), c0.clone());
            sgemm_with(
                GemmBackend::Avx512,
                m,
                k,
                n,
                0.5,
                &a.data,
                a.rs,
                a.cs,
                &b.data,
                b.rs,
                b.cs,
                1.5,
                &mut got,
                rsc,
                csc,
            )
            .unwrap();
            naive::gemm(
                m, k, n, 0.5, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs, 1.5, &mut want, rsc, csc,
            )
            .unwrap();
            common::assert_close(
                &format!("{m}x{k}x{n} c strides ({rsc}, {csc})"),
                &got,
                &want,
                1e-4,
                1e-4,
            );
        }
    }
}
