//! Batch-norm statistics: per channel, the batch mean and biased variance of an NCHW tensor
//! ([`batch_norm_stats`], [`BatchStats`]), by the shifted-data algorithm in f64.
//!
//! The batch norm layer and the fused [`bn_act_pool_forward`](crate::bn_act_pool_forward) both
//! compute their statistics here, so they agree bit for bit.

use rayon::prelude::*;

use crate::bn_act_pool_simd::{avx2_dispatch, Geometry, LANES};
use crate::tensor::Tensor4;

/// Batch mean and biased variance (divided by `N*H*W`) of one channel.
///
/// ```
/// use fracture_tensor::{batch_norm_stats, BatchStats, Tensor4};
/// let x = Tensor4::from_vec([2, 1, 1, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// assert_eq!(batch_norm_stats(&x), [BatchStats { mean: 2.5, var: 1.25 }]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchStats {
    /// Mean over the batch and the plane.
    pub mean: f64,
    /// Biased variance (the batch norm normalises with it; PyTorch's running variance takes the
    /// unbiased one, `var * m / (m - 1)`).
    pub var: f64,
}

/// Per channel, the batch mean and biased variance of `x` (`[N, C, H, W]`): f64 sums of
/// `x - k` and `(x - k)^2` with the shift `k` = the channel's first value, which keeps the
/// `E[d^2] - E[d]^2` subtraction well conditioned, planes in batch order, 8 lanes within a
/// plane. One rayon task per channel; the result does not depend on the thread count.
///
/// An empty channel (`N*H*W == 0`) has NaN statistics.
///
/// PyTorch equivalent: `torch.var_mean(x, dim=(0, 2, 3), unbiased=False)` (in f64).
///
/// ```
/// use fracture_tensor::{batch_norm_stats, Tensor4};
/// let x = Tensor4::from_vec([1, 2, 1, 2], vec![1.0, 3.0, 5.0, 5.0])?;
/// let s = batch_norm_stats(&x);
/// assert_eq!((s[0].mean, s[0].var), (2.0, 1.0));
/// assert_eq!((s[1].mean, s[1].var), (5.0, 0.0));
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn batch_norm_stats(x: &Tensor4) -> Vec<BatchStats> {
    let geo = Geometry::of(x.shape());
    let xs = x.as_slice();
    (0..geo.c_total)
        .into_par_iter()
        .map(|c| channel_stats(xs, &geo, c))
        .collect()
}

/// Batch mean and biased variance of channel `c` of the NCHW data `xs` of shape `geo`.
pub(crate) fn channel_stats(xs: &[f32], geo: &Geometry, c: usize) -> BatchStats {
    let m = (geo.n * geo.hw) as f64;
    if geo.n * geo.hw == 0 {
        return BatchStats {
            mean: f64::NAN,
            var: f64::NAN,
        };
    }
    let k = xs[geo.plane(0, c).start];
    let (s1, s2) = (0..geo.n)
        .map(|i| shifted_sums(&xs[geo.plane(i, c)], k))
        .fold((0.0, 0.0), |a, s| (a.0 + s.0, a.1 + s.1));
    let d_mean = s1 / m;
    BatchStats {
        mean: k as f64 + d_mean,
        var: (s2 / m - d_mean * d_mean).max(0.0),
    }
}

avx2_dispatch! {
    /// See [`shifted_sums_impl`].
    fn shifted_sums => shifted_sums_impl(xs: &[f32], k: f32) -> (f64, f64)
}

/// `(sum (x_i - k), sum (x_i - k)^2)` in f64, lane by lane.
#[inline(always)]
fn shifted_sums_impl(xs: &[f32], k: f32) -> (f64, f64) {
    let k = k as f64;
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] as f64 - k;
            s1[i] += d;
            s2[i] += d * d;
        }
    }
    let (mut r1, mut r2) = (s1.iter().sum::<f64>(), s2.iter().sum::<f64>());
    for &v in tail {
        let d = v as f64 - k;
        r1 += d;
        r2 += d * d;
    }
    (r1, r2)
}
