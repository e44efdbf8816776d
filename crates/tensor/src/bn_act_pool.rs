//! Fused batch norm, ReLU (or ReLU6) and optional 2x2 max pooling, forward
//! ([`bn_act_pool_forward`]) and backward ([`bn_act_pool_backward`]): `BatchNorm2d -> ReLU ->
//! [MaxPool2d(2)]` in fewer passes over memory than the three kernels in a row.
//!
//! The unfused chain makes a full pass over the activation per step and stores every
//! intermediate (the normalised tensor, the ReLU output and its mask, the pooled output and its
//! argmax); its backward makes as many passes again. The fused kernel makes:
//!
//! - **forward with batch statistics** (training): per channel (one rayon task each), a read of
//!   the channel's planes for its batch mean and variance ([`batch_norm_stats`]'s arithmetic),
//!   then one pass that reads `x` again and writes only the final output (pooled when `pool`)
//!   plus, when a cache is asked for, what backward needs: a copy of `x` (unless the caller
//!   hands its input over with [`BnActPoolCache::keep_input`]) and, with pooling, per output the
//!   position of the window's maximum (one byte, with a code of its own when the activation
//!   blocked it) and the normalised value `x_hat` at that position (a quarter-size f32 plane).
//!   For planes of at least 1024 values the second read happens in the same task, while the
//!   channel is still in cache; smaller planes are streamed plane by plane afterwards.
//! - **forward with given (running) statistics**: the same single pass; with pooling the cache
//!   needs no copy of the input.
//! - **backward**: per-channel `sum(dy_hat)` (= `dbeta`) and `sum(dy_hat * x_hat)` (= `dgamma`),
//!   where `dy_hat` is the gradient reaching the batch norm's output (non-zero only at the
//!   active window maxima, so with pooling this reads only the quarter-size `dy`, codes and
//!   `x_hat` planes), then one pass `dx = gamma / sigma * (dy_hat - mean(dy_hat) - x_hat *
//!   mean(dy_hat * x_hat))` that recomputes `x_hat` from the cached `x` (with given statistics,
//!   `dx = gamma / sigma * dy_hat`).
//!
//! The inner loops (in `bn_act_pool_simd.rs`) run on contiguous slices; on x86-64 CPUs with AVX2
//! they run in a copy compiled for AVX2 (chosen at run time), with the same results bit for bit.
//!
//! # Equivalence
//! The arithmetic is that of the unfused kernels, operation for operation: `t = (x - mean) *
//! inv_std`, `y = t * gamma + beta`, ReLU `if y < 0 { 0 } else { y }` capped at `cap`, and the
//! window maximum picked as [`max_pool2d_forward`](crate::max_pool2d_forward) does (row-major
//! order, the first maximum wins, NaN wins over numbers), so outputs agree bit for bit with the
//! unfused chain. Gradients agree to f32 rounding (the sums run in f64 in a different order).
//! Odd heights and widths are floored as PyTorch's `MaxPool2d(2)`: the last row or column gets
//! only the batch-norm terms of the gradient. [`naive::bn_act_pool_forward`] and
//! [`naive::bn_act_pool_backward`] are the oracle.
//!
//! Every result is independent of the number of threads.
//!
//! [`naive::bn_act_pool_forward`]: crate::naive::bn_act_pool_forward
//! [`naive::bn_act_pool_backward`]: crate::naive::bn_act_pool_backward

use rayon::prelude::*;

use crate::batch_stats::{channel_stats, BatchStats};
use crate::bn_act_pool_simd::{
    dense_dx_plane, dense_sums, forward_plane, pool_dx_plane, sparse_sums, Coef, DxConst, Geometry,
};
use crate::error::{Result, TensorError};
use crate::tensor::Tensor4;

/// Minimum number of elements per rayon task in the per-plane passes.
const MIN_TASK_ELEMS: usize = 1 << 14;

/// Planes of at least this many elements are normalised by the task that computed their
/// channel's statistics, while they are still in cache; smaller planes (strided far apart in
/// NCHW) are better streamed plane by plane in a second pass.
const CHANNEL_TASK_MIN_PLANE: usize = 1024;

/// Which statistics normalise the input.
///
/// ```
/// use fracture_tensor::BnActStats;
/// let running = BnActStats::Given { mean: &[0.0, 1.0], var: &[1.0, 4.0] };
/// assert!(!running.is_batch());
/// assert!(BnActStats::Batch.is_batch());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BnActStats<'a> {
    /// The batch's own mean and biased variance per channel (training); the forward returns
    /// them.
    Batch,
    /// Given per-channel mean and variance (inference with the running statistics).
    Given {
        /// Mean per channel (`C` values).
        mean: &'a [f32],
        /// Variance per channel (`C` values).
        var: &'a [f32],
    },
}

impl BnActStats<'_> {
    /// Whether these are the batch's own statistics.
    pub fn is_batch(&self) -> bool {
        matches!(self, BnActStats::Batch)
    }
}

/// What [`bn_act_pool_forward`] computes: `min(max(BN(x), 0), cap)`, then a 2x2, stride-2 max
/// pool when `pool`.
///
/// PyTorch equivalent: `nn.Sequential(nn.BatchNorm2d(C, eps), nn.ReLU(), nn.MaxPool2d(2))`
/// (`nn.ReLU6()` for `cap = 6`, no pool when `pool` is `false`), with `gamma` and `beta` the
/// batch norm's `weight` and `bias`.
///
/// ```
/// use fracture_tensor::{BnActPoolParams, BnActStats};
/// let p = BnActPoolParams::relu(&[1.0, 1.0], &[0.0, 0.0], BnActStats::Batch);
/// assert_eq!((p.eps, p.cap, p.pool), (1e-5, f32::INFINITY, true));
/// let p6 = BnActPoolParams { cap: 6.0, pool: false, ..p };
/// assert_eq!(p6.output_shape([2, 2, 5, 5]), [2, 2, 5, 5]);
/// assert_eq!(p.output_shape([2, 2, 5, 5]), [2, 2, 2, 2]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BnActPoolParams<'a> {
    /// Scale per channel (`C` values; the batch norm's `weight`).
    pub gamma: &'a [f32],
    /// Shift per channel (`C` values; the batch norm's `bias`).
    pub beta: &'a [f32],
    /// Batch statistics or given ones.
    pub stats: BnActStats<'a>,
    /// Added to the variance before the square root (positive and finite).
    pub eps: f32,
    /// Upper bound of the activation: `f32::INFINITY` for ReLU, `6.0` for ReLU6 (positive).
    pub cap: f32,
    /// Whether a 2x2, stride-2 max pool follows (floored as PyTorch's; needs `H, W >= 2`).
    pub pool: bool,
}

impl<'a> BnActPoolParams<'a> {
    /// ReLU with pooling and PyTorch's `eps = 1e-5`.
    pub fn relu(gamma: &'a [f32], beta: &'a [f32], stats: BnActStats<'a>) -> Self {
        BnActPoolParams {
            gamma,
            beta,
            stats,
            eps: 1e-5,
            cap: f32::INFINITY,
            pool: true,
        }
    }

    /// The output shape for input shape `x`: `[N, C, H/2, W/2]` with pooling, `x` without.
    pub fn output_shape(&self, x: [usize; 4]) -> [usize; 4] {
        let [n, c, h, w] = x;
        if self.pool {
            [n, c, h / 2, w / 2]
        } else {
            x
        }
    }
}

/// Asks [`bn_act_pool_forward`] for a cache for [`bn_act_pool_backward`].
///
/// ```
/// use fracture_tensor::BnActCacheRequest;
/// let r = BnActCacheRequest::default();
/// assert!(r.copy_input && r.spare_codes.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BnActCacheRequest {
    /// Copy the input into the cache when backward needs it (batch statistics, or no pooling).
    /// `false` when the caller hands its input over afterwards with
    /// [`BnActPoolCache::keep_input`] (no copy). Default `true`.
    pub copy_input: bool,
    /// An allocation to reuse for the window codes (from
    /// [`BnActPoolCache::into_spare_codes`]); its contents do not matter. Default empty.
    pub spare_codes: Vec<u8>,
}

impl Default for BnActCacheRequest {
    fn default() -> Self {
        BnActCacheRequest {
            copy_input: true,
            spare_codes: Vec::new(),
        }
    }
}

/// What [`bn_act_pool_forward`] keeps for [`bn_act_pool_backward`]: the per-channel constants,
/// the input (when needed) and, with pooling, the window codes and `x_hat` at the maxima.
///
/// ```
/// use fracture_tensor::{bn_act_pool_forward, BnActCacheRequest, BnActPoolParams, BnActStats, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// let p = BnActPoolParams::relu(&[1.0], &[0.0], BnActStats::Batch);
/// let request = BnActCacheRequest { copy_input: false, ..Default::default() };
/// let mut cache = bn_act_pool_forward(&x, &p, Some(request))?.cache.unwrap();
/// assert!(cache.needs_input());
/// cache.keep_input(x)?;
/// assert!(!cache.needs_input());
/// assert_eq!(cache.input_shape(), [1, 1, 2, 2]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[derive(Debug)]
pub struct BnActPoolCache {
    x_shape: [usize; 4],
    coefs: Vec<Coef>,
    batch_stats: bool,
    pool: bool,
    /// The input, when backward needs `x_hat` everywhere (batch statistics, or no pooling).
    x: Option<Tensor4>,
    /// With pooling: per output, the window position (0..4, row-major) of the maximum or
    /// `INACTIVE`, and `x_hat` at that position.
    pooled: Option<(Vec<u8>, Tensor4)>,
}

impl BnActPoolCache {
    /// Shape of the forward's input (and of `dx`).
    pub fn input_shape(&self) -> [usize; 4] {
        self.x_shape
    }

    /// Shape of the forward's output (and of `dy`).
    pub fn output_shape(&self) -> [usize; 4] {
        let [n, c, h, w] = self.x_shape;
        if self.pool {
            [n, c, h / 2, w / 2]
        } else {
            self.x_shape
        }
    }

    /// Whether backward needs the forward's input: with batch statistics or without pooling.
    fn wants_input(&self) -> bool {
        self.batch_stats || !self.pool
    }

    /// Whether backward needs the input and the cache does not hold it yet (a forward asked not
    /// to copy it): hand it over with [`keep_input`](Self::keep_input).
    pub fn needs_input(&self) -> bool {
        self.wants_input() && self.x.is_none()
    }

    /// Keeps the forward's input `x` (without a copy) if backward needs it, else drops it.
    /// `x` must be the tensor the forward ran on; its shape is checked.
    pub fn keep_input(&mut self, x: Tensor4) -> Result<()> {
        if x.shape() != self.x_shape {
            return Err(TensorError::ShapeMismatch {
                op: "BnActPoolCache::keep_input",
                what: "x vs the forward's input".into(),
                expected: format!("{:?}", self.x_shape),
                got: format!("{:?}", x.shape()),
            });
        }
        if self.wants_input() {
            self.x = Some(x);
        }
        Ok(())
    }

    /// The window-code allocation, to reuse in the next forward's [`BnActCacheRequest`].
    pub fn into_spare_codes(self) -> Vec<u8> {
        self.pooled.map(|(codes, _)| codes).unwrap_or_default()
    }
}

/// What [`bn_act_pool_forward`] returns.
///
/// ```
/// use fracture_tensor::{bn_act_pool_forward, BnActPoolParams, BnActStats, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 1, 2], vec![1.0, 3.0])?;
/// let p = BnActPoolParams { pool: false, ..BnActPoolParams::relu(&[1.0], &[0.0], BnActStats::Batch) };
/// let out = bn_act_pool_forward(&x, &p, None)?;
/// assert_eq!(out.batch_stats.unwrap()[0].mean, 2.0);
/// assert!(out.cache.is_none());
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[derive(Debug)]
pub struct BnActPoolOutput {
    /// The activation, pooled when asked: `[N, C, H/2, W/2]` or `[N, C, H, W]`.
    pub y: Tensor4,
    /// With [`BnActStats::Batch`], the batch mean and biased variance per channel (to update
    /// running statistics).
    pub batch_stats: Option<Vec<BatchStats>>,
    /// The cache for backward, when one was asked for.
    pub cache: Option<BnActPoolCache>,
}

/// Gradients of [`bn_act_pool_backward`].
///
/// ```
/// use fracture_tensor::{bn_act_pool_backward, bn_act_pool_forward, BnActCacheRequest, BnActPoolParams, BnActStats, Tensor4};
/// let x = Tensor4::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// let p = BnActPoolParams::relu(&[1.0], &[0.0], BnActStats::Given { mean: &[0.0], var: &[1.0] });
/// let out = bn_act_pool_forward(&x, &p, Some(BnActCacheRequest::default()))?;
/// let dy = Tensor4::from_vec([1, 1, 1, 1], vec![1.0])?;
/// let g = bn_act_pool_backward(out.cache.as_ref().unwrap(), &dy)?;
/// assert_eq!(g.dbeta, [1.0]);
/// assert_eq!(g.dx.shape(), [1, 1, 2, 2]);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[derive(Debug)]
pub struct BnActPoolGrads {
    /// Gradient with respect to the input, `[N, C, H, W]`.
    pub dx: Tensor4,
    /// Gradient with respect to `gamma` (`C` values): `sum(dy_hat * x_hat)`.
    pub dgamma: Vec<f32>,
    /// Gradient with respect to `beta` (`C` values): `sum(dy_hat)`.
    pub dbeta: Vec<f32>,
}

/// Checks `params` against input shape `shape`; `op` names the caller in errors.
pub(crate) fn check_forward(
    op: &'static str,
    shape: [usize; 4],
    params: &BnActPoolParams,
) -> Result<()> {
    let [n, c, h, w] = shape;
    let mut lens = vec![("gamma", params.gamma.len()), ("beta", params.beta.len())];
    if let BnActStats::Given { mean, var } = params.stats {
        lens.extend([("mean", mean.len()), ("var", var.len())]);
    }
    for (what, got) in lens {
        if got != c {
            return Err(TensorError::LengthMismatch {
                op,
                what: format!("{what} (one value per channel of x {shape:?})"),
                expected: c,
                got,
            });
        }
    }
    if !(params.eps > 0.0 && params.eps.is_finite()) {
        return Err(TensorError::InvalidParameter {
            op,
            name: "eps",
            value: params.eps.to_string(),
            reason: "must be positive and finite".into(),
        });
    }
    if params.cap.is_nan() || params.cap <= 0.0 {
        return Err(TensorError::InvalidParameter {
            op,
            name: "cap",
            value: params.cap.to_string(),
            reason: "must be positive (f32::INFINITY for ReLU)".into(),
        });
    }
    if params.pool && (n == 0 || h < 2 || w < 2) {
        return Err(TensorError::EmptyOutput {
            op,
            input: shape,
            detail: "the 2x2 max pool needs N >= 1, H >= 2 and W >= 2".into(),
        });
    }
    if params.stats.is_batch() && n * h * w < 2 {
        return Err(TensorError::ShapeMismatch {
            op,
            what: "x".into(),
            expected: "more than one value per channel for batch statistics (N*H*W > 1)".into(),
            got: format!("{shape:?}"),
        });
    }
    Ok(())
}

/// Checks that `dy` has the shape of the output of the forward whose input had shape
/// `x_shape`.
pub(crate) fn check_dy(
    op: &'static str,
    dy: &Tensor4,
    x_shape: [usize; 4],
    pool: bool,
) -> Result<()> {
    let [n, c, h, w] = x_shape;
    let want = if pool { [n, c, h / 2, w / 2] } else { x_shape };
    if dy.shape() != want {
        return Err(TensorError::ShapeMismatch {
            op,
            what: "dy vs the forward's output".into(),
            expected: format!("{want:?}"),
            got: format!("{:?}", dy.shape()),
        });
    }
    Ok(())
}

/// Fused `BatchNorm2d -> ReLU/ReLU6 -> [MaxPool2d(2)]` forward of `x` (`[N, C, H, W]`), and the
/// cache for [`bn_act_pool_backward`] when `cache` asks for one.
///
/// One read of each channel for its batch statistics (with [`BnActStats::Batch`]), then one
/// pass that writes only the output and what backward needs: with pooling one byte per output
/// (which window position won, or that the activation blocked it) and `x_hat` there, and a copy
/// of `x` when backward needs it (batch statistics, or no pooling) and `cache.copy_input`.
/// Outputs equal the unfused kernels' bit for bit; the result does not depend on the number of
/// threads.
///
/// Errors: `gamma`, `beta` (and given statistics) not of `C` values, `eps` not positive and
/// finite, `cap` not positive, pooling with `N == 0`, `H < 2` or `W < 2`, batch statistics with
/// `N*H*W < 2`.
///
/// ```
/// use fracture_tensor::{bn_act_pool_forward, BnActPoolParams, BnActStats, Tensor4};
/// // One 2x2 plane per image: batch mean 2.5, so only the 4 survives the ReLU and the pool.
/// let x = Tensor4::from_vec([2, 1, 2, 2], vec![1.0, 4.0, 3.0, 2.0, 1.0, 4.0, 3.0, 2.0])?;
/// let p = BnActPoolParams::relu(&[1.0], &[0.0], BnActStats::Batch);
/// let out = bn_act_pool_forward(&x, &p, None)?;
/// assert_eq!(out.y.shape(), [2, 1, 1, 1]);
/// assert!((out.y.as_slice()[0] - 1.5 / 1.25f32.sqrt()).abs() < 1e-4);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn bn_act_pool_forward(
    x: &Tensor4,
    params: &BnActPoolParams,
    cache: Option<BnActCacheRequest>,
) -> Result<BnActPoolOutput> {
    let shape = x.shape();
    check_forward("bn_act_pool_forward", shape, params)?;
    let geo = Geometry::of(shape);
    let (n, c_total) = (geo.n, geo.c_total);
    let out_shape = params.output_shape(shape);
    let out_plane = out_shape[2] * out_shape[3];
    let batch = params.stats.is_batch();
    let pool = params.pool;
    let needs_input = batch || !pool;
    // Every element of every buffer below is written by the pass.
    let mut y = Tensor4::for_overwrite(out_shape);
    let mut copy = cache
        .as_ref()
        .filter(|r| r.copy_input && needs_input)
        .map(|_| Tensor4::for_overwrite(shape));
    let caching = cache.is_some();
    let mut pooled = cache.filter(|_| pool).map(|r| {
        let mut codes = r.spare_codes;
        codes.resize(n * c_total * out_plane, 0);
        (codes, Tensor4::for_overwrite(out_shape))
    });
    let xs = x.as_slice();
    let coef_of = |c: usize| coef(params, xs, &geo, c);
    let per_channel: Vec<(Coef, BatchStats)> = if geo.hw >= CHANNEL_TASK_MIN_PLANE {
        // One task per channel: statistics, then the outputs while the planes are cached.
        let (codes, tmax) = match &mut pooled {
            Some((codes, t)) => (
                by_channel(&mut codes[..], out_plane, c_total),
                by_channel(t.as_slice_mut(), out_plane, c_total),
            ),
            None => (no_planes(c_total), no_planes(c_total)),
        };
        let copies = match &mut copy {
            Some(t) => by_channel(t.as_slice_mut(), geo.hw, c_total),
            None => no_planes(c_total),
        };
        by_channel(y.as_slice_mut(), out_plane, c_total)
            .into_par_iter()
            .zip(codes)
            .zip(tmax)
            .zip(copies)
            .enumerate()
            .map(|(c, (((ys, codes), tmax), copies))| {
                let (k, stats) = coef_of(c);
                let (mut codes, mut tmax, mut copies) =
                    (codes.into_iter(), tmax.into_iter(), copies.into_iter());
                for (i, yp) in ys.into_iter().enumerate() {
                    let xp = &xs[geo.plane(i, c)];
                    let (cp, tp, xc) = (codes.next(), tmax.next(), copies.next());
                    forward_plane(&geo, pool, &k, xp, yp, cp, tp, xc);
                }
                (k, stats)
            })
            .collect()
    } else {
        // Statistics per channel, then the outputs plane by plane (contiguous streams).
        let per_channel: Vec<(Coef, BatchStats)> =
            (0..c_total).into_par_iter().map(coef_of).collect();
        let planes = n * c_total;
        if planes > 0 && geo.hw > 0 {
            let (codes, tmax) = match &mut pooled {
                Some((codes, t)) => (
                    opt_planes(Some(&mut codes[..]), out_plane, planes),
                    opt_planes(Some(t.as_slice_mut()), out_plane, planes),
                ),
                None => (opt_planes(None, 0, planes), opt_planes(None, 0, planes)),
            };
            let copies = opt_planes(copy.as_mut().map(|t| t.as_slice_mut()), geo.hw, planes);
            y.as_slice_mut()
                .par_chunks_mut(out_plane)
                .zip(codes)
                .zip(tmax)
                .zip(copies)
                .enumerate()
                .with_min_len((MIN_TASK_ELEMS / geo.hw).max(1))
                .for_each(|(p, (((yp, cp), tp), xc))| {
                    let k = &per_channel[p % c_total].0;
                    let xp = &xs[p * geo.hw..(p + 1) * geo.hw];
                    forward_plane(&geo, pool, k, xp, yp, cp, tp, xc);
                });
        }
        per_channel
    };
    let cache = caching.then(|| BnActPoolCache {
        x_shape: shape,
        coefs: per_channel.iter().map(|(k, _)| *k).collect(),
        batch_stats: batch,
        pool,
        x: copy,
        pooled,
    });
    let batch_stats = batch.then(|| per_channel.iter().map(|(_, s)| *s).collect());
    Ok(BnActPoolOutput {
        y,
        batch_stats,
        cache,
    })
}

/// Channel `c`'s constants, and its batch statistics with [`BnActStats::Batch`] (zeros
/// otherwise).
fn coef(params: &BnActPoolParams, xs: &[f32], geo: &Geometry, c: usize) -> (Coef, BatchStats) {
    let eps = params.eps as f64;
    let (stats, mean, inv_std) = match params.stats {
        BnActStats::Batch => {
            let s = channel_stats(xs, geo, c);
            (s, s.mean as f32, (1.0 / (s.var + eps).sqrt()) as f32)
        }
        BnActStats::Given { mean, var } => {
            let is = (1.0 / (var[c] as f64 + eps).sqrt()) as f32;
            let zero = BatchStats {
                mean: 0.0,
                var: 0.0,
            };
            (zero, mean[c], is)
        }
    };
    let k = Coef {
        mean,
        inv_std,
        gamma: params.gamma[c],
        beta: params.beta[c],
        cap: params.cap,
        open: params.cap.is_infinite(),
    };
    (k, stats)
}

/// Backward of [`bn_act_pool_forward`] from its `cache`: `dx`, `dgamma` and `dbeta` for the
/// upstream gradient `dy` (the output's shape). With batch statistics the gradient flows
/// through the mean and variance too (training); with given statistics they are constants.
///
/// Errors: `dy` not of the output's shape; a cache whose forward did not copy the input and
/// that was not given it ([`BnActPoolCache::needs_input`]).
///
/// ```
/// use fracture_tensor::{bn_act_pool_backward, bn_act_pool_forward, BnActCacheRequest, BnActPoolParams, BnActStats, Tensor4};
/// let x = Tensor4::from_vec([2, 1, 2, 2], vec![1.0, 4.0, 3.0, 2.0, 1.0, 4.0, 3.0, 2.0])?;
/// let p = BnActPoolParams::relu(&[1.0], &[0.0], BnActStats::Batch);
/// let out = bn_act_pool_forward(&x, &p, Some(BnActCacheRequest::default()))?;
/// let dy = Tensor4::from_vec([2, 1, 1, 1], vec![1.0, 1.0])?;
/// let g = bn_act_pool_backward(out.cache.as_ref().unwrap(), &dy)?;
/// assert_eq!(g.dx.shape(), x.shape());
/// assert!((g.dbeta[0] - 2.0).abs() < 1e-6);
/// // The batch mean absorbs a constant shift: dx sums to zero per channel.
/// assert!(g.dx.as_slice().iter().sum::<f32>().abs() < 1e-5);
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
pub fn bn_act_pool_backward(cache: &BnActPoolCache, dy: &Tensor4) -> Result<BnActPoolGrads> {
    let op = "bn_act_pool_backward";
    let x_shape = cache.x_shape;
    check_dy(op, dy, x_shape, cache.pool)?;
    if cache.needs_input() {
        return Err(TensorError::InvalidParameter {
            op,
            name: "cache",
            value: "without the forward's input".into(),
            reason: "backward needs the input here: pass it with BnActPoolCache::keep_input".into(),
        });
    }
    let geo = Geometry::of(x_shape);
    let (n, c_total) = (geo.n, geo.c_total);
    let m = (n * geo.hw) as f64;
    let coefs = &cache.coefs;
    let batch = cache.batch_stats;
    let dys = dy.as_slice();
    let xs = cache.x.as_ref().map(|t| t.as_slice());
    let pooled = cache.pooled.as_ref().map(|(c, t)| (&c[..], t.as_slice()));
    // Per channel, batch order within: sum(dy_hat), sum(dy_hat * x_hat).
    let sums: Vec<(f64, f64)> = (0..c_total)
        .into_par_iter()
        .map(|c| {
            (0..n)
                .map(|i| match (pooled, xs) {
                    (Some((codes, tmax)), _) => {
                        let r = geo.out_plane(i, c);
                        sparse_sums(&dys[r.clone()], &codes[r.clone()], &tmax[r])
                    }
                    (None, Some(xs)) => {
                        let r = geo.plane(i, c);
                        dense_sums(&dys[r.clone()], &xs[r], &coefs[c])
                    }
                    (None, None) => (0.0, 0.0), // excluded by needs_input above
                })
                .fold((0.0, 0.0), |a, s| (a.0 + s.0, a.1 + s.1))
        })
        .collect();
    // dx = k * (dy_hat - a - x_hat * b) with batch statistics, k * dy_hat without.
    let consts: Vec<DxConst> = coefs
        .iter()
        .zip(&sums)
        .map(|(coef, s)| {
            let (a, b) = if batch {
                ((s.0 / m) as f32, (s.1 / m) as f32)
            } else {
                (0.0, 0.0)
            };
            DxConst {
                k: coef.gamma * coef.inv_std,
                a,
                b,
                batch,
            }
        })
        .collect();
    // Every element is written below, plane by plane (contiguous writes).
    let mut dx = Tensor4::for_overwrite(x_shape);
    if geo.hw > 0 {
        dx.as_slice_mut()
            .par_chunks_mut(geo.hw)
            .enumerate()
            .with_min_len((MIN_TASK_ELEMS / geo.hw).max(1))
            .for_each(|(p, o)| {
                let (i, c) = (p / c_total, p % c_total);
                let xp = xs.map(|xs| &xs[geo.plane(i, c)]);
                match pooled {
                    Some((codes, _)) => {
                        let r = geo.out_plane(i, c);
                        let (dyp, cp) = (&dys[r.clone()], &codes[r]);
                        pool_dx_plane(&geo, &coefs[c], &consts[c], xp, dyp, cp, o)
                    }
                    None => {
                        let dyp = &dys[geo.plane(i, c)];
                        dense_dx_plane(&coefs[c], &consts[c], xp, dyp, o)
                    }
                }
            });
    }
    Ok(BnActPoolGrads {
        dx,
        dgamma: sums.iter().map(|s| s.1 as f32).collect(),
        dbeta: sums.iter().map(|s| s.0 as f32).collect(),
    })
}

/// `buf` split into `count` planes of `plane` values, or `count` `None`s.
fn opt_planes<T>(buf: Option<&mut [T]>, plane: usize, count: usize) -> Vec<Option<&mut [T]>> {
    match buf {
        Some(b) if plane > 0 => b.chunks_mut(plane).map(Some).collect(),
        _ => (0..count).map(|_| None).collect(),
    }
}

/// The planes (`plane` values each) of an NCHW buffer grouped by channel: entry `c` holds the
/// planes of channel `c` in batch order. No planes if `plane` is 0.
fn by_channel<T>(buf: &mut [T], plane: usize, c_total: usize) -> Vec<Vec<&mut [T]>> {
    let mut groups = no_planes(c_total);
    if plane > 0 {
        for (p, chunk) in buf.chunks_mut(plane).enumerate() {
            groups[p % c_total].push(chunk);
        }
    }
    groups
}

/// `c_total` empty plane lists.
fn no_planes<'a, T>(c_total: usize) -> Vec<Vec<&'a mut [T]>> {
    (0..c_total).map(|_| Vec::new()).collect()
}
