//! `GlobalAvgMaxPool` against PyTorch (golden values committed in `tests/data`, made by
//! `tests/data/make_concat_pool_golden.py`), against a naive reference built from the other
//! golden-tested pools on random shapes, and by finite differences.

mod common;

use common::{assert_close, rand_tensor, Golden};
use fracture_layers::{GlobalAvgMaxPool, GlobalAvgPool, Layer, MaxPool2dConfig, Mode};
use fracture_tensor::Tensor4;
use proptest::prelude::*;

#[test]
fn concat_pool_matches_pytorch() {
    let g = Golden::from_path(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/concat_pool.safetensors"
    )));
    let mut pool = GlobalAvgMaxPool::new();
    let y = pool.forward(&g.t4("x"), Mode::Train).unwrap();
    assert_eq!(y.shape(), [2, 6, 1, 1]);
    assert_close("concat pool y", y.as_slice(), g.vec("y"), 1e-5, 1e-6);
    let dx = pool.backward(&g.t4("dy")).unwrap();
    // dx includes the tied maximum of plane (0, 1): PyTorch sends its gradient to the first.
    assert_close("concat pool dx", dx.as_slice(), g.vec("dx"), 1e-5, 1e-6);
}

/// The reference: a square max pool as large as the plane, and the average pool, side by side.
fn reference(x: &Tensor4, dy: &Tensor4) -> (Vec<f32>, Vec<f32>) {
    let [n, c, h, _] = x.shape();
    let mut max = MaxPool2dConfig::new(h).init().unwrap();
    let mut avg = GlobalAvgPool::new();
    let ym = max.forward(x, Mode::Train).unwrap();
    let ya = avg.forward(x, Mode::Train).unwrap();
    let mut y = Vec::new();
    let (mut dym, mut dya) = (Vec::new(), Vec::new());
    for i in 0..n {
        y.extend_from_slice(&ym.as_slice()[i * c..(i + 1) * c]);
        y.extend_from_slice(&ya.as_slice()[i * c..(i + 1) * c]);
        dym.extend_from_slice(&dy.as_slice()[i * 2 * c..i * 2 * c + c]);
        dya.extend_from_slice(&dy.as_slice()[i * 2 * c + c..(i + 1) * 2 * c]);
    }
    let dxm = max
        .backward(&Tensor4::from_vec([n, c, 1, 1], dym).unwrap())
        .unwrap();
    let dxa = avg
        .backward(&Tensor4::from_vec([n, c, 1, 1], dya).unwrap())
        .unwrap();
    let dx = dxm
        .as_slice()
        .iter()
        .zip(dxa.as_slice())
        .map(|(a, b)| a + b)
        .collect();
    (y, dx)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn concat_pool_equals_max_and_average_pools(
        n in 1usize..4, c in 1usize..6, side in 1usize..12, seed in 0u64..1000,
    ) {
        let x = rand_tensor([n, c, side, side], seed);
        let dy = rand_tensor([n, 2 * c, 1, 1], seed + 1);
        let mut pool = GlobalAvgMaxPool::new();
        let y = pool.forward(&x, Mode::Train).unwrap();
        let dx = pool.backward(&dy).unwrap();
        let (want_y, want_dx) = reference(&x, &dy);
        assert_close("y", y.as_slice(), &want_y, 1e-5, 1e-6);
        assert_close("dx", dx.as_slice(), &want_dx, 1e-5, 1e-6);
    }
}

#[test]
fn concat_pool_gradient_matches_finite_differences() {
    // Non-square planes; entries at least 0.09 apart, so that no step of 0.01 changes the argmax.
    let mut x = rand_tensor([2, 3, 3, 5], 11);
    for (i, v) in x.as_slice_mut().iter_mut().enumerate() {
        // Distinct levels 0.1 apart in a scrambled order, plus noise below 0.01.
        *v = 0.1 * ((i * 7) % 30) as f32 + 0.005 * *v;
    }
    let r = rand_tensor([2, 6, 1, 1], 12);
    let objective = |x: &Tensor4| -> f64 {
        let y = GlobalAvgMaxPool::new().forward(x, Mode::Eval).unwrap();
        y.as_slice()
            .iter()
            .zip(r.as_slice())
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    let mut pool = GlobalAvgMaxPool::new();
    pool.forward(&x, Mode::Train).unwrap();
    let dx = pool.backward(&r).unwrap();
    let eps = 1e-2f32;
    for i in 0..x.len() {
        let orig = x.as_slice()[i];
        x.as_slice_mut()[i] = orig + eps;
        let up = objective(&x);
        x.as_slice_mut()[i] = orig - eps;
        let down = objective(&x);
        x.as_slice_mut()[i] = orig;
        let fd = (up - down) / (2.0 * eps as f64);
        let got = dx.as_slice()[i] as f64;
        assert!(
            (fd - got).abs() <= 1e-3 + 1e-2 * fd.abs(),
            "dx[{i}]: backward {got}, finite difference {fd}"
        );
    }
}
