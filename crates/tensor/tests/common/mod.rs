//! Helpers shared by this crate's integration tests: seeded random tensors and tolerance
//! checks. The shared golden files are found by `fracture_test_support::shared_dir`.
#![allow(dead_code)]

use fracture_tensor::Tensor4;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeded generator so every test is reproducible.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A tensor of uniform values in [-1, 1).
pub fn random_tensor(rng: &mut ChaCha8Rng, shape: [usize; 4]) -> Tensor4 {
    let n = shape.iter().product();
    let data = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor4::from_vec(shape, data).expect("length matches shape")
}

/// A vector of uniform values in [-1, 1).
pub fn random_vec(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Largest violation of `|a - b| <= abs + rel * |b|`; `Err` names the worst element.
pub fn check_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    rel: f32,
    abs: f32,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: length {} vs expected {}",
            got.len(),
            want.len()
        ));
    }
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (abs + rel * w.abs());
        // NaN (in either operand) counts as the worst possible violation.
        let excess = if excess.is_nan() {
            f32::INFINITY
        } else {
            excess
        };
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "{what}: element {i}: got {} expected {} (rel {rel}, abs {abs})",
            got[i], want[i]
        )),
    }
}

/// Panicking form of [`check_close`].
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    if let Err(e) = check_close(what, got, want, rel, abs) {
        panic!("{e}");
    }
}

/// Largest absolute difference between two slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
