//! Fused batch norm, ReLU and optional 2x2 max pooling: [`BnReluPool`] computes
//! `BatchNorm2d -> ReLU -> [MaxPool2d(2)]` of this crate in fewer passes over memory.
//!
//! The unfused chain makes a full pass over the activation per step and stores every
//! intermediate (the normalised tensor, the ReLU output and its mask, the pooled output and its
//! argmax); its backward makes as many passes again. The fused layer makes:
//!
//! - **forward (training)**: per channel (one rayon task each), a read of the channel's planes
//!   for its batch mean and variance (as [`crate::BatchNorm2d`]: shifted f64 sums in a fixed
//!   order), then one pass that reads `x` again and writes only the final output (pooled when
//!   `pool`) plus what backward needs: a copy of `x` (see below) and, with pooling, per output
//!   the position of the window's maximum (one byte, with a code of its own when the ReLU
//!   blocked it) and the normalised value `x_hat` at that position (a quarter-size f32 plane).
//!   For planes of at least 1024 values the second read happens in the same task, while the
//!   channel is still in cache; smaller planes are streamed plane by plane afterwards.
//! - **forward ([`Mode::Eval`])**: the same single pass with the running statistics and no cache.
//! - **backward**: per-channel `sum(dy_hat)` and `sum(dy_hat * x_hat)`, where `dy_hat` is the
//!   gradient reaching the batch norm's output (non-zero only at the active window maxima, so
//!   with pooling this reads only the quarter-size `dy`, codes and `x_hat` planes), then one pass
//!   `dx = gamma / sigma * (dy_hat - mean(dy_hat) - x_hat * mean(dy_hat * x_hat))` that
//!   recomputes `x_hat` from the cached `x`.
//!
//! The inner loops run on contiguous slices; on x86-64 CPUs with AVX2 they run in a copy
//! compiled for AVX2 (chosen at run time), with the same results bit for bit.
//!
//! # Why a copy of the input
//! [`Layer::forward`] borrows its input, and the convolution before this layer drops its output
//! once the forward returns, so the training backward (which needs `x_hat` at every position)
//! must keep its own copy. It is written in the fused pass while the plane is in cache (one
//! streaming write, cheaper than the normalised tensor the unfused batch norm stores plus the
//! ReLU output). [`BnReluPool::forward_owned`] takes the input by value and keeps it without a
//! copy. In [`Mode::EvalWithGrad`] with pooling the input is not needed at all.
//!
//! # Equivalence
//! The arithmetic is that of the unfused layers, operation for operation: `t = (x - mean) *
//! inv_std`, `y = t * gamma + beta`, ReLU `if y < 0 { 0 } else { y }`, and the window maximum
//! picked as the tensor crate's 2x2 max pool does (row-major order, the first maximum wins, NaN
//! wins over numbers), so outputs agree bit for bit with the unfused chain in every mode (and
//! [`Mode::Eval`] with [`Mode::EvalWithGrad`]). Gradients agree to f32 rounding (the sums run in
//! f64 in a different order). Odd heights and widths are floored as PyTorch's `MaxPool2d(2)`:
//! the last row or column gets only the batch-norm terms of the gradient.
//!
//! Every result is independent of the number of threads.
//!
//! # Speed
//! Forward + backward in training against the unfused chain at the reference model's shapes
//! (batch 32; 32x128x128 to 256x16x16), interleaved in one process on the shared, busy 2-vCPU
//! test machine: about 2x faster (medians 1.6-2.3x across shapes and runs), 2.2-2.6x with
//! [`BnReluPool::forward_owned`] (`cargo bench -p fracture-layers --bench fused`).

use fracture_tensor::Tensor4;
use rayon::prelude::*;

use crate::batch_norm::{fresh_state, shifted_sums as bn_shifted_sums, BatchNorm2d};
use crate::error::{LayersError, Result};
use crate::layer::{join_name, Buffer, Layer, Mode, Param};
use crate::relu::Activation;

/// [`Layer::kind`] of a [`BnReluPool`] with pooling.
pub const KIND_POOL: &str = "BnReluPool(BatchNorm2d->ReLU->MaxPool2d(2))";
/// [`Layer::kind`] of a [`BnReluPool`] without pooling.
pub const KIND_NO_POOL: &str = "BnReluPool(BatchNorm2d->ReLU)";
/// [`Layer::kind`] of a [`BnReluPool`] with ReLU6 and pooling.
pub const KIND_RELU6_POOL: &str = "BnReluPool(BatchNorm2d->ReLU6->MaxPool2d(2))";
/// [`Layer::kind`] of a [`BnReluPool`] with ReLU6, without pooling.
pub const KIND_RELU6_NO_POOL: &str = "BnReluPool(BatchNorm2d->ReLU6)";

/// Window code of an output whose maximum is not a positive ReLU output: no gradient passes.
const INACTIVE: u8 = 4;

/// Minimum number of elements per rayon task in the per-plane passes.
const MIN_TASK_ELEMS: usize = 1 << 14;

/// Planes of at least this many elements are normalised by the task that computed their
/// channel's statistics, while they are still in cache; smaller planes (strided far apart in
/// NCHW) are better streamed plane by plane in a second pass.
const CHANNEL_TASK_MIN_PLANE: usize = 1024;

/// Lanes of independent f64 accumulators: a fixed summation order that the compiler can
/// vectorise.
const LANES: usize = 8;

/// Configuration of a [`BnReluPool`] layer.
///
/// PyTorch equivalent: `nn.Sequential(nn.BatchNorm2d(num_features, eps, momentum), nn.ReLU(),
/// nn.MaxPool2d(2))`, without the pool when `pool` is `false`, with `nn.ReLU6()` when
/// `activation` is [`Activation::Relu6`]. Default: 1 channel, `eps = 1e-5`, `momentum = 0.1`,
/// ReLU, with pooling.
///
/// ```
/// use fracture_layers::BnReluPoolConfig;
/// let layer = BnReluPoolConfig::new(8).with_pool(false).init().unwrap();
/// assert_eq!(layer.config().num_features, 8);
/// assert!(!layer.config().pool);
/// assert_eq!(layer.running_var().value.as_slice(), &[1.0; 8]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BnReluPoolConfig {
    /// Channels `C` (default 1).
    pub num_features: usize,
    /// Added to the variance before the square root (default `1e-5`).
    pub eps: f32,
    /// Weight of the new batch statistic in the running averages (default `0.1`).
    pub momentum: f32,
    /// Whether a 2x2, stride-2 max pool follows the ReLU (default `true`).
    pub pool: bool,
    /// The activation after the batch norm (default ReLU; configs written before it existed
    /// read as ReLU).
    #[serde(default)]
    pub activation: Activation,
}

impl Default for BnReluPoolConfig {
    fn default() -> Self {
        BnReluPoolConfig {
            num_features: 1,
            eps: 1e-5,
            momentum: 0.1,
            pool: true,
            activation: Activation::Relu,
        }
    }
}

impl BnReluPoolConfig {
    /// `num_features` channels, with pooling, PyTorch's batch-norm defaults otherwise.
    pub fn new(num_features: usize) -> Self {
        BnReluPoolConfig {
            num_features,
            ..Default::default()
        }
    }

    /// Same config with or without the 2x2 max pool.
    pub fn with_pool(mut self, pool: bool) -> Self {
        self.pool = pool;
        self
    }

    /// Same config with another activation (ReLU6 for mobile networks).
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Same config with batch-norm `eps` and `momentum` (EfficientNet: `1e-3`, `0.01`).
    pub fn with_eps_momentum(mut self, eps: f32, momentum: f32) -> Self {
        self.eps = eps;
        self.momentum = momentum;
        self
    }

    fn kind(&self) -> &'static str {
        match (self.pool, self.activation) {
            (true, Activation::Relu) => KIND_POOL,
            (false, Activation::Relu) => KIND_NO_POOL,
            (true, Activation::Relu6) => KIND_RELU6_POOL,
            (false, Activation::Relu6) => KIND_RELU6_NO_POOL,
        }
    }

    /// Builds the layer: `gamma = 1`, `beta = 0`, running mean 0 and variance 1 (as
    /// [`crate::BatchNorm2dConfig::init`]).
    pub fn init(&self) -> Result<BnReluPool> {
        let (weight, bias, running_mean, running_var) =
            fresh_state(self.kind(), self.num_features, self.eps, self.momentum)?;
        Ok(BnReluPool {
            config: *self,
            weight,
            bias,
            running_mean,
            running_var,
            cache: None,
            spare_codes: Vec::new(),
        })
    }
}

/// Per-channel constants of one forward pass.
#[derive(Clone, Copy, Debug)]
struct Coef {
    mean: f32,
    inv_std: f32,
    gamma: f32,
    beta: f32,
    /// Upper bound of the activation (infinity for ReLU).
    cap: f32,
    /// `cap` is infinite: only the lower bound blocks gradients.
    open: bool,
}

impl Coef {
    /// The normalised value, as [`BatchNorm2d`] computes it.
    #[inline(always)]
    fn x_hat(&self, x: f32) -> f32 {
        (x - self.mean) * self.inv_std
    }

    /// The batch norm's output for a normalised value.
    #[inline(always)]
    fn affine(&self, t: f32) -> f32 {
        t * self.gamma + self.beta
    }

    /// The activation of a batch-norm output `y`: ReLU, capped at `cap`.
    #[inline(always)]
    fn act(&self, y: f32) -> f32 {
        let r = relu(y);
        if r > self.cap {
            self.cap
        } else {
            r
        }
    }

    /// Whether the activation passes a gradient at batch-norm output `y` (`0 < y < cap`).
    #[inline(always)]
    fn on(&self, y: f32) -> bool {
        y > 0.0 && (self.open || y < self.cap)
    }
}

/// ReLU as [`crate::Relu`]: NaN passes through, `-0.0` stays.
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

#[derive(Debug)]
struct Cache {
    x_shape: [usize; 4],
    coefs: Vec<Coef>,
    batch_stats: bool,
    /// The input, when backward needs `x_hat` everywhere (training, or no pooling).
    x: Option<Tensor4>,
    /// With pooling: per output, the window position (0..4, row-major) of the maximum or
    /// [`INACTIVE`], and `x_hat` at that position.
    pooled: Option<(Vec<u8>, Tensor4)>,
}

/// Fused `BatchNorm2d -> ReLU -> [MaxPool2d(2)]`: `[N, C, H, W] -> [N, C, H/2, W/2]` with
/// pooling (floored, as PyTorch), `[N, C, H, W]` without.
///
/// The same function, gradients and running-statistics updates as the chain of
/// [`crate::BatchNorm2d`], [`crate::Relu`] and [`crate::MaxPool2d`] (kernel 2, stride 2), in
/// fewer passes over memory (see the [module docs](self)). Parameters and buffers have the
/// batch norm's local names `weight`, `bias`, `running_mean` and `running_var` (PyTorch shape
/// `[C]`), so a fused layer pushed under the batch norm's name in a [`crate::Sequential`] keeps
/// the state-dict names, and checkpoints, of the unfused chain. Training needs more than one
/// value per channel (`N*H*W > 1`); pooling needs `H >= 2` and `W >= 2`.
///
/// ```
/// use fracture_layers::{BnReluPoolConfig, Layer, Mode};
/// use fracture_tensor::Tensor4;
/// let mut layer = BnReluPoolConfig::new(1).init().unwrap();
/// // One 2x2 plane per image: batch mean 2.5, so only the 4 survives the ReLU and the pool.
/// let x = Tensor4::from_vec([2, 1, 2, 2], vec![1.0, 4.0, 3.0, 2.0, 1.0, 4.0, 3.0, 2.0]).unwrap();
/// let y = layer.forward(&x, Mode::Train).unwrap();
/// assert_eq!(y.shape(), [2, 1, 1, 1]);
/// assert!((y.as_slice()[0] - 1.5 / 1.25f32.sqrt()).abs() < 1e-4);
/// let names: Vec<String> = layer.named_params().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["weight", "bias"]);
/// layer.zero_grad();
/// let dx = layer.backward(&Tensor4::from_vec([2, 1, 1, 1], vec![1.0, 1.0]).unwrap()).unwrap();
/// assert_eq!(dx.shape(), x.shape());
/// assert!((layer.bias().grad.as_slice()[0] - 2.0).abs() < 1e-6);
/// ```
#[derive(Debug)]
pub struct BnReluPool {
    config: BnReluPoolConfig,
    weight: Param,
    bias: Param,
    running_mean: Buffer,
    running_var: Buffer,
    cache: Option<Cache>,
    /// The window-code allocation of the last backward, reused by the next forward.
    spare_codes: Vec<u8>,
}

impl BnReluPool {
    /// A fused layer with `bn`'s config, parameters (values and gradients) and running
    /// statistics, followed by a 2x2 max pool when `pool`.
    ///
    /// ```
    /// use fracture_layers::{BatchNorm2dConfig, BnReluPool};
    /// let bn = BatchNorm2dConfig::new(4).init().unwrap();
    /// let fused = BnReluPool::from_batch_norm(&bn, true);
    /// assert_eq!(fused.weight(), bn.weight());
    /// assert_eq!(fused.config().num_features, 4);
    /// ```
    pub fn from_batch_norm(bn: &BatchNorm2d, pool: bool) -> Self {
        let c = bn.config();
        BnReluPool {
            config: BnReluPoolConfig {
                num_features: c.num_features,
                eps: c.eps,
                momentum: c.momentum,
                pool,
                activation: Activation::Relu,
            },
            weight: bn.weight().clone(),
            bias: bn.bias().clone(),
            running_mean: bn.running_mean().clone(),
            running_var: bn.running_var().clone(),
            cache: None,
            spare_codes: Vec::new(),
        }
    }

    /// The config it was built from.
    pub fn config(&self) -> &BnReluPoolConfig {
        &self.config
    }
    crate::batch_norm::bn_state!(accessors);

    /// The output shape for input shape `x`: `[N, C, H/2, W/2]` with pooling.
    pub fn output_shape(&self, x: [usize; 4]) -> [usize; 4] {
        let [n, c, h, w] = x;
        if self.config.pool {
            [n, c, h / 2, w / 2]
        } else {
            x
        }
    }

    /// As [`Layer::forward`], but takes the input by value: when backward needs it (training,
    /// or no pooling), it is kept as it is instead of copied. Same results.
    ///
    /// ```
    /// use fracture_layers::{BnReluPoolConfig, Layer, Mode};
    /// use fracture_tensor::Tensor4;
    /// let x = Tensor4::from_vec([1, 2, 2, 2], (0..8).map(|v| v as f32).collect()).unwrap();
    /// let mut a = BnReluPoolConfig::new(2).init().unwrap();
    /// let mut b = BnReluPoolConfig::new(2).init().unwrap();
    /// assert_eq!(a.forward(&x, Mode::Train).unwrap(), b.forward_owned(x, Mode::Train).unwrap());
    /// ```
    pub fn forward_owned(&mut self, x: Tensor4, mode: Mode) -> Result<Tensor4> {
        let (y, cache) = self.run(&x, mode, false)?;
        self.cache = cache.map(|mut c| {
            if self.needs_input(mode) {
                c.x = Some(x);
            }
            c
        });
        Ok(y)
    }

    fn kind_str(&self) -> &'static str {
        self.config.kind()
    }

    /// Whether backward after a forward in `mode` needs the input.
    fn needs_input(&self, mode: Mode) -> bool {
        mode.caches() && (mode.is_training() || !self.config.pool)
    }

    fn check_input(&self, shape: [usize; 4], mode: Mode) -> Result<()> {
        let kind = self.kind_str();
        let [n, c, h, w] = shape;
        if c != self.config.num_features {
            return Err(LayersError::shape(
                kind,
                format!("input [N, {}, H, W]", self.config.num_features),
                &shape,
            ));
        }
        if self.config.pool && (n == 0 || h < 2 || w < 2) {
            return Err(LayersError::shape(
                kind,
                "an input with N >= 1, H >= 2 and W >= 2 for the 2x2 max pool",
                &shape,
            ));
        }
        if mode.is_training() && n * h * w < 2 {
            return Err(LayersError::shape(
                kind,
                "more than one value per channel in training mode (N*H*W > 1)",
                &shape,
            ));
        }
        Ok(())
    }

    /// The forward pass; the returned cache holds a copy of `x` only if `copy_input` (and
    /// backward needs it).
    ///
    /// One rayon task per channel: in training it computes the channel's batch statistics and
    /// then, while the channel's planes are still in cache, its outputs.
    fn run(
        &mut self,
        x: &Tensor4,
        mode: Mode,
        copy_input: bool,
    ) -> Result<(Tensor4, Option<Cache>)> {
        self.clear_cache();
        let shape = x.shape();
        self.check_input(shape, mode)?;
        let geo = Geometry::of(shape);
        let (n, c_total) = (geo.n, geo.c_total);
        let out_shape = self.output_shape(shape);
        let out_plane = out_shape[2] * out_shape[3];
        let training = mode.is_training();
        let eps = self.config.eps as f64;
        let gamma = self.weight.value.as_slice();
        let beta = self.bias.value.as_slice();
        let running_mean = self.running_mean.value.as_slice();
        let running_var = self.running_var.value.as_slice();
        // Every element of every buffer below is written by the pass.
        let mut y = Tensor4::for_overwrite(out_shape);
        let mut copy =
            (copy_input && self.needs_input(mode)).then(|| Tensor4::for_overwrite(shape));
        let mut pooled = (self.config.pool && mode.caches()).then(|| {
            let mut codes = std::mem::take(&mut self.spare_codes);
            codes.resize(n * c_total * out_plane, 0);
            (codes, Tensor4::for_overwrite(out_shape))
        });
        let xs = x.as_slice();
        let pool = self.config.pool;
        let cap = self.config.activation.cap();
        // Channel c's constants, and its batch (mean, biased variance) in training.
        let coef_of = |c: usize| {
            let (stats, mean, inv_std) = if training {
                let (mu, var) = channel_stats(xs, &geo, c);
                ((mu, var), mu as f32, (1.0 / (var + eps).sqrt()) as f32)
            } else {
                let is = (1.0 / (running_var[c] as f64 + eps).sqrt()) as f32;
                ((0.0, 0.0), running_mean[c], is)
            };
            let k = Coef {
                mean,
                inv_std,
                gamma: gamma[c],
                beta: beta[c],
                cap,
                open: cap.is_infinite(),
            };
            (k, stats)
        };
        let per_channel: Vec<(Coef, (f64, f64))> = if geo.hw >= CHANNEL_TASK_MIN_PLANE {
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
            let per_channel: Vec<(Coef, (f64, f64))> =
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
        if training {
            // Running statistics as BatchNorm2d updates them (unbiased variance).
            let m = n * geo.hw;
            let mom = self.config.momentum as f64;
            let unbias = m as f64 / (m - 1) as f64;
            let rm = self.running_mean.value.as_slice_mut();
            for (r, (_, s)) in rm.iter_mut().zip(&per_channel) {
                *r = ((1.0 - mom) * *r as f64 + mom * s.0) as f32;
            }
            let rv = self.running_var.value.as_slice_mut();
            for (r, (_, s)) in rv.iter_mut().zip(&per_channel) {
                *r = ((1.0 - mom) * *r as f64 + mom * s.1 * unbias) as f32;
            }
        }
        let cache = mode.caches().then(|| Cache {
            x_shape: shape,
            coefs: per_channel.iter().map(|(k, _)| *k).collect(),
            batch_stats: training,
            x: copy,
            pooled,
        });
        Ok((y, cache))
    }
}

/// Sizes of an input `[N, C, H, W]` and of its pooled output `[N, C, OH, OW]`.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c_total: usize,
    w: usize,
    hw: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// The geometry of input shape `[N, C, H, W]` (the pooled side floors, as `MaxPool2d(2)`).
    fn of([n, c_total, h, w]: [usize; 4]) -> Self {
        Geometry {
            n,
            c_total,
            w,
            hw: h * w,
            oh: h / 2,
            ow: w / 2,
        }
    }

    /// Index range of plane `(i, c)` of the input.
    fn plane(&self, i: usize, c: usize) -> std::ops::Range<usize> {
        let p = i * self.c_total + c;
        p * self.hw..(p + 1) * self.hw
    }

    /// Index range of plane `(i, c)` of the pooled output.
    fn out_plane(&self, i: usize, c: usize) -> std::ops::Range<usize> {
        let (p, ohw) = (i * self.c_total + c, self.oh * self.ow);
        p * ohw..(p + 1) * ohw
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

/// Defines `$name`, which runs `$imp` compiled for AVX2 when the CPU has it (twice the SIMD
/// width of the x86-64 baseline these crates are built for) and as built otherwise. The same
/// IEEE operations run in the same order either way (Rust never fuses or reorders float
/// arithmetic), so results are identical bit for bit.
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* fn $name:ident => $imp:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}

avx2_dispatch! {
    /// See [`forward_plane_impl`].
    #[allow(clippy::too_many_arguments)]
    fn forward_plane => forward_plane_impl(
        geo: &Geometry,
        pool: bool,
        k: &Coef,
        xp: &[f32],
        yp: &mut [f32],
        cp: Option<&mut [u8]>,
        tp: Option<&mut [f32]>,
        xc: Option<&mut [f32]>
    )
}

avx2_dispatch! {
    /// BatchNorm2d's own per-plane sums (so both layers compute the same statistics), compiled
    /// for AVX2.
    fn shifted_sums => bn_shifted_sums(xs: &[f32], k: f32) -> (f64, f64)
}

avx2_dispatch! {
    /// See [`sparse_sums_impl`].
    fn sparse_sums => sparse_sums_impl(dy: &[f32], codes: &[u8], t: &[f32]) -> (f64, f64)
}

avx2_dispatch! {
    /// See [`dense_sums_impl`].
    fn dense_sums => dense_sums_impl(dy: &[f32], xs: &[f32], k: &Coef) -> (f64, f64)
}

avx2_dispatch! {
    /// See [`pool_dx_plane_impl`].
    fn pool_dx_plane => pool_dx_plane_impl(
        geo: &Geometry,
        coef: &Coef,
        d: &DxConst,
        xp: Option<&[f32]>,
        dyp: &[f32],
        cp: &[u8],
        o: &mut [f32]
    )
}

avx2_dispatch! {
    /// See [`dense_dx_plane_impl`].
    fn dense_dx_plane => dense_dx_plane_impl(
        coef: &Coef,
        d: &DxConst,
        xp: Option<&[f32]>,
        dyp: &[f32],
        o: &mut [f32]
    )
}

/// `buf` split into `count` planes of `plane` values, or `count` `None`s.
fn opt_planes<T>(buf: Option<&mut [T]>, plane: usize, count: usize) -> Vec<Option<&mut [T]>> {
    match buf {
        Some(b) if plane > 0 => b.chunks_mut(plane).map(Some).collect(),
        _ => (0..count).map(|_| None).collect(),
    }
}

/// The forward pass over one input plane `xp`: the output plane `yp`, with pooling the window
/// codes `cp` and `x_hat` at the maxima `tp` (when caching), and the input copy `xc` (when
/// kept).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_plane_impl(
    geo: &Geometry,
    pool: bool,
    k: &Coef,
    xp: &[f32],
    yp: &mut [f32],
    cp: Option<&mut [u8]>,
    tp: Option<&mut [f32]>,
    xc: Option<&mut [f32]>,
) {
    if pool {
        match (cp, tp) {
            (Some(cp), Some(tp)) => pool_plane_cached(xp, geo.w, geo.oh, geo.ow, k, yp, cp, tp),
            _ => pool_plane(xp, geo.w, geo.oh, geo.ow, k, yp),
        }
    } else {
        for (o, &v) in yp.iter_mut().zip(xp) {
            *o = k.act(k.affine(k.x_hat(v)));
        }
    }
    if let Some(xc) = xc {
        xc.copy_from_slice(xp);
    }
}

/// Keeps `(v, t, i)` if `v` beats the current best: a larger value, or the first NaN (the
/// tensor crate's max-pool rule), without branches.
#[inline(always)]
fn pick(best: &mut f32, best_t: &mut f32, idx: &mut u8, v: f32, t: f32, i: u8) {
    let take = (v > *best) | (v.is_nan() & !best.is_nan());
    *best = if take { v } else { *best };
    *best_t = if take { t } else { *best_t };
    *idx = if take { i } else { *idx };
}

/// One 2x2 window `[a b; c d]`: the pooled ReLU output, the window code and `x_hat` at the
/// maximum.
#[inline(always)]
fn window(k: &Coef, a: f32, b: f32, c: f32, d: f32) -> (f32, u8, f32) {
    let (ta, tb, tc, td) = (k.x_hat(a), k.x_hat(b), k.x_hat(c), k.x_hat(d));
    let (mut best, mut best_t, mut idx) = (k.act(k.affine(ta)), ta, 0u8);
    pick(&mut best, &mut best_t, &mut idx, k.act(k.affine(tb)), tb, 1);
    pick(&mut best, &mut best_t, &mut idx, k.act(k.affine(tc)), tc, 2);
    pick(&mut best, &mut best_t, &mut idx, k.act(k.affine(td)), td, 3);
    // The ReLU passes a gradient where its input is > 0, i.e. where its output is (and, for
    // ReLU6, below the cap: an output at the cap had an input at or above it).
    let code = if k.on(best) { idx } else { INACTIVE };
    (best, code, best_t)
}

/// The two input rows (first `2 * ow` values each) under output row `r`.
#[inline(always)]
fn row_pair(xp: &[f32], w: usize, ow: usize, r: usize) -> (&[f32], &[f32]) {
    let top = &xp[2 * r * w..2 * r * w + 2 * ow];
    let bottom = &xp[(2 * r + 1) * w..(2 * r + 1) * w + 2 * ow];
    (top, bottom)
}

/// Pooled output of one plane, no cache (inference).
#[inline(always)]
fn pool_plane(xp: &[f32], w: usize, oh: usize, ow: usize, k: &Coef, yp: &mut [f32]) {
    for (r, yrow) in yp.chunks_exact_mut(ow).enumerate().take(oh) {
        let (top, bottom) = row_pair(xp, w, ow, r);
        for ((o, t), b) in yrow
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            *o = window(k, t[0], t[1], b[0], b[1]).0;
        }
    }
}

/// Pooled output of one plane with the window codes and `x_hat` at the maxima.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pool_plane_cached(
    xp: &[f32],
    w: usize,
    oh: usize,
    ow: usize,
    k: &Coef,
    yp: &mut [f32],
    cp: &mut [u8],
    tp: &mut [f32],
) {
    for (r, ((yrow, crow), trow)) in yp
        .chunks_exact_mut(ow)
        .zip(cp.chunks_exact_mut(ow))
        .zip(tp.chunks_exact_mut(ow))
        .enumerate()
        .take(oh)
    {
        let (top, bottom) = row_pair(xp, w, ow, r);
        for ((((o, code), tmax), t), b) in yrow
            .iter_mut()
            .zip(crow.iter_mut())
            .zip(trow.iter_mut())
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            (*o, *code, *tmax) = window(k, t[0], t[1], b[0], b[1]);
        }
    }
}

/// Batch mean and biased variance of channel `c`, computed exactly as [`BatchNorm2d`] does:
/// f64 sums of `x - k` and `(x - k)^2` with `k` the channel's first value, planes in batch
/// order.
fn channel_stats(xs: &[f32], geo: &Geometry, c: usize) -> (f64, f64) {
    let m = (geo.n * geo.hw) as f64;
    let k = xs[geo.plane(0, c).start];
    let (s1, s2) = (0..geo.n)
        .map(|i| shifted_sums(&xs[geo.plane(i, c)], k))
        .fold((0.0, 0.0), |a, s| (a.0 + s.0, a.1 + s.1));
    let d_mean = s1 / m;
    (k as f64 + d_mean, (s2 / m - d_mean * d_mean).max(0.0))
}

/// `(sum dy_hat, sum dy_hat * x_hat)` over the pooled outputs of one plane: `dy_hat` is `dy`
/// where the window code is active, else 0.
#[inline(always)]
fn sparse_sums_impl(dy: &[f32], codes: &[u8], t: &[f32]) -> (f64, f64) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (cd, cc, ct) = (
        dy.chunks_exact(LANES),
        codes.chunks_exact(LANES),
        t.chunks_exact(LANES),
    );
    let (rd, rc, rt) = (cd.remainder(), cc.remainder(), ct.remainder());
    for ((d, c), t) in cd.zip(cc).zip(ct) {
        for i in 0..LANES {
            let on = c[i] < INACTIVE;
            let g = d[i] as f64;
            s1[i] += if on { g } else { 0.0 };
            s2[i] += if on { g * t[i] as f64 } else { 0.0 };
        }
    }
    let (mut r1, mut r2) = (s1.iter().sum::<f64>(), s2.iter().sum::<f64>());
    for ((&d, &c), &t) in rd.iter().zip(rc).zip(rt) {
        if c < INACTIVE {
            r1 += d as f64;
            r2 += d as f64 * t as f64;
        }
    }
    (r1, r2)
}

/// `(sum dy_hat, sum dy_hat * x_hat)` over one unpooled plane, the ReLU mask recomputed from
/// `x`.
#[inline(always)]
fn dense_sums_impl(dy: &[f32], xs: &[f32], k: &Coef) -> (f64, f64) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (cd, cx) = (dy.chunks_exact(LANES), xs.chunks_exact(LANES));
    let (rd, rx) = (cd.remainder(), cx.remainder());
    for (d, x) in cd.zip(cx) {
        for i in 0..LANES {
            let t = k.x_hat(x[i]);
            let on = k.on(k.affine(t));
            let g = d[i] as f64;
            s1[i] += if on { g } else { 0.0 };
            s2[i] += if on { g * t as f64 } else { 0.0 };
        }
    }
    let (mut r1, mut r2) = (s1.iter().sum::<f64>(), s2.iter().sum::<f64>());
    for (&d, &x) in rd.iter().zip(rx) {
        let t = k.x_hat(x);
        if k.on(k.affine(t)) {
            r1 += d as f64;
            r2 += d as f64 * t as f64;
        }
    }
    (r1, r2)
}

/// Index within the plane of the input element window code `code` of output `(r, j)` picks.
#[inline(always)]
fn window_pos(w: usize, r: usize, j: usize, code: u8) -> usize {
    (2 * r + (code >> 1) as usize) * w + 2 * j + (code & 1) as usize
}

/// The batch-norm backward's constants of one channel: `dx = k * (dy_hat - a - x_hat * b)`
/// with batch statistics, `dx = k * dy_hat` with running statistics.
struct DxConst {
    k: f32,
    a: f32,
    b: f32,
    batch: bool,
}

/// `dx` of one plane with pooling: `dy_hat` is `dy` at the active window maxima, 0 elsewhere
/// (also on the last row or column an odd size leaves out). `xp` is needed with batch
/// statistics.
#[inline(always)]
fn pool_dx_plane_impl(
    geo: &Geometry,
    coef: &Coef,
    d: &DxConst,
    xp: Option<&[f32]>,
    dyp: &[f32],
    cp: &[u8],
    o: &mut [f32],
) {
    let (k, a, b, w) = (d.k, d.a, d.b, geo.w);
    let rows = dyp.chunks_exact(geo.ow).zip(cp.chunks_exact(geo.ow));
    match xp.filter(|_| d.batch) {
        Some(xp) => {
            // The unfused arithmetic with dy_hat = 0, then the maxima overwritten.
            let na = 0.0 - a;
            for (o, &v) in o.iter_mut().zip(xp) {
                *o = k * (na - coef.x_hat(v) * b);
            }
            for (r, (dyr, cr)) in rows.enumerate() {
                for (j, (&g, &code)) in dyr.iter().zip(cr).enumerate() {
                    if code < INACTIVE {
                        let i = window_pos(w, r, j, code);
                        o[i] = k * (g - a - coef.x_hat(xp[i]) * b);
                    }
                }
            }
        }
        None => {
            o.fill(k * 0.0);
            for (r, (dyr, cr)) in rows.enumerate() {
                for (j, (&g, &code)) in dyr.iter().zip(cr).enumerate() {
                    if code < INACTIVE {
                        o[window_pos(w, r, j, code)] = k * g;
                    }
                }
            }
        }
    }
}

/// `dx` of one plane without pooling: `dy_hat` is `dy` where the ReLU (recomputed from `x`)
/// was active. Without pooling the input is always cached.
#[inline(always)]
fn dense_dx_plane_impl(coef: &Coef, d: &DxConst, xp: Option<&[f32]>, dyp: &[f32], o: &mut [f32]) {
    let Some(xp) = xp else {
        return;
    };
    let (k, a, b) = (d.k, d.a, d.b);
    if d.batch {
        for ((o, &g), &v) in o.iter_mut().zip(dyp).zip(xp) {
            let t = coef.x_hat(v);
            let dh = if coef.on(coef.affine(t)) { g } else { 0.0 };
            *o = k * (dh - a - t * b);
        }
    } else {
        for ((o, &g), &v) in o.iter_mut().zip(dyp).zip(xp) {
            let dh = if coef.on(coef.affine(coef.x_hat(v))) {
                g
            } else {
                0.0
            };
            *o = k * dh;
        }
    }
}

impl Layer for BnReluPool {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        self.kind_str()
    }

    fn forward_owned(&mut self, x: Tensor4, mode: Mode) -> Result<Tensor4> {
        BnReluPool::forward_owned(self, x, mode)
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let (y, cache) = self.run(x, mode, true)?;
        self.cache = cache;
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let kind = self.kind_str();
        let cache = self
            .cache
            .take()
            .ok_or(LayersError::NoForwardCache { layer: kind })?;
        let x_shape = cache.x_shape;
        let out_shape = self.output_shape(x_shape);
        if dy.shape() != out_shape {
            return Err(LayersError::shape(
                kind,
                format!("upstream gradient of the output's shape {out_shape:?}"),
                &dy.shape(),
            ));
        }
        let geo = Geometry::of(x_shape);
        let (n, c_total) = (geo.n, geo.c_total);
        let m = (n * geo.hw) as f64;
        let coefs = &cache.coefs;
        let batch = cache.batch_stats;
        let dys = dy.as_slice();
        let xs = cache.x.as_ref().map(|t| t.as_slice());
        let pooled = cache.pooled.as_ref().map(|(c, t)| (&c[..], t.as_slice()));
        // A caching forward keeps the input unless it pools with running statistics.
        if xs.is_none() && (batch || pooled.is_none()) {
            return Err(LayersError::NoForwardCache { layer: kind });
        }
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
                        (None, None) => (0.0, 0.0), // excluded above
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
        for (g, s) in self.weight.grad.as_slice_mut().iter_mut().zip(&sums) {
            *g += s.1 as f32;
        }
        for (g, s) in self.bias.grad.as_slice_mut().iter_mut().zip(&sums) {
            *g += s.0 as f32;
        }
        if let Some((codes, _)) = cache.pooled {
            self.spare_codes = codes;
        }
        Ok(dx)
    }

    crate::batch_norm::bn_state!(visitors);

    fn clear_cache(&mut self) {
        if let Some(Cache {
            pooled: Some((codes, _)),
            ..
        }) = self.cache.take()
        {
            self.spare_codes = codes;
        }
    }
}
