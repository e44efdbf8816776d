//! Vectorisable f32 reductions with a fixed summation order (so results never depend on the
//! number of threads).

const LANES: usize = 16;

/// Sum of `v`, accumulated in 16 independent lanes (so the compiler can use SIMD registers),
/// then combined in a fixed order. Deterministic for a given slice.
pub(crate) fn sum_f32(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, x) in acc.iter_mut().zip(ch) {
            *a += *x;
        }
    }
    for (a, x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += *x;
    }
    // Pairwise combination of the lanes.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::sum_f32;

    #[test]
    fn sums_every_length() {
        for len in 0usize..70 {
            let v: Vec<f32> = (0..len).map(|i| i as f32).collect();
            assert_eq!(
                sum_f32(&v),
                (len * len.saturating_sub(1) / 2) as f32,
                "len {len}"
            );
        }
    }
}
