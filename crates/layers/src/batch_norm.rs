//! Batch normalisation over the channels of an NCHW tensor.
//!
//! Per channel `c`, over the `M = N*H*W` values of that channel:
//! - training: `mean_c`, biased `var_c` of the batch; `y = gamma_c * (x - mean_c) /
//!   sqrt(var_c + eps) + beta_c`; running statistics updated as
//!   `r = (1 - momentum) * r + momentum * stat` with the **unbiased** variance `var_c * M / (M-1)`;
//! - evaluation: the same with the running statistics in place of the batch's.
//!
//! Statistics are accumulated in f64, one channel per rayon task, each in a fixed order
//! ([`fracture_tensor::batch_norm_stats`]), so the result does not depend on the thread count.

use fracture_tensor::{batch_norm_stats, Tensor4};
use rayon::prelude::*;

use crate::error::{LayersError, Result};
use crate::layer::{join_name, Buffer, Layer, Mode, Param};

/// The code around a batch norm's state (`weight`, `bias`, `running_mean`, `running_var`
/// fields), shared by [`BatchNorm2d`] and the fused [`crate::BnReluPool`], which carries the same
/// state under the same names: `bn_state!(accessors)` in the inherent impl,
/// `bn_state!(visitors)` in the [`Layer`] impl.
macro_rules! bn_state {
    (accessors) => {
        /// Scale gamma, `[C]`.
        pub fn weight(&self) -> &Param {
            &self.weight
        }
        /// Mutable gamma.
        pub fn weight_mut(&mut self) -> &mut Param {
            &mut self.weight
        }
        /// Shift beta, `[C]`.
        pub fn bias(&self) -> &Param {
            &self.bias
        }
        /// Mutable beta.
        pub fn bias_mut(&mut self) -> &mut Param {
            &mut self.bias
        }
        /// Running mean, `[C]`.
        pub fn running_mean(&self) -> &Buffer {
            &self.running_mean
        }
        /// Mutable running mean.
        pub fn running_mean_mut(&mut self) -> &mut Buffer {
            &mut self.running_mean
        }
        /// Running (unbiased) variance, `[C]`.
        pub fn running_var(&self) -> &Buffer {
            &self.running_var
        }
        /// Mutable running variance.
        pub fn running_var_mut(&mut self) -> &mut Buffer {
            &mut self.running_var
        }
    };
    (visitors) => {
        fn visit_params<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, &'a mut Param)) {
            f(&join_name(prefix, "weight"), &mut self.weight);
            f(&join_name(prefix, "bias"), &mut self.bias);
        }

        fn visit_params_ref<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Param)) {
            f(&join_name(prefix, "weight"), &self.weight);
            f(&join_name(prefix, "bias"), &self.bias);
        }

        fn visit_buffers<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, &'a mut Buffer)) {
            f(&join_name(prefix, "running_mean"), &mut self.running_mean);
            f(&join_name(prefix, "running_var"), &mut self.running_var);
        }

        fn visit_buffers_ref<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Buffer)) {
            f(&join_name(prefix, "running_mean"), &self.running_mean);
            f(&join_name(prefix, "running_var"), &self.running_var);
        }
    };
}
pub(crate) use bn_state;

/// Checks a batch norm's settings (`layer` names it in errors) and returns its fresh state over
/// `c` channels: `gamma = 1`, `beta = 0`, running mean 0 and variance 1. Shared by
/// [`BatchNorm2dConfig::init`] and [`crate::BnReluPoolConfig::init`].
pub(crate) fn fresh_state(
    layer: &'static str,
    c: usize,
    eps: f32,
    momentum: f32,
) -> Result<(Param, Param, Buffer, Buffer)> {
    if c == 0 {
        return Err(LayersError::config(layer, "num_features must be positive"));
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(LayersError::config(
            layer,
            format!("eps must be positive and finite, got {eps}"),
        ));
    }
    if !(0.0..=1.0).contains(&momentum) {
        return Err(LayersError::config(
            layer,
            format!("momentum must be in [0, 1], got {momentum}"),
        ));
    }
    let ones = Tensor4::from_vec([c, 1, 1, 1], vec![1.0; c])?;
    Ok((
        Param::new(ones.clone(), &[c])?,
        Param::new(Tensor4::zeros([c, 1, 1, 1]), &[c])?,
        Buffer::new(Tensor4::zeros([c, 1, 1, 1]), &[c])?,
        Buffer::new(ones, &[c])?,
    ))
}

/// Configuration of a [`BatchNorm2d`] layer.
///
/// PyTorch equivalent: `nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1)` (affine, tracking
/// running statistics; `num_batches_tracked` is not kept).
///
/// ```
/// let bn = fracture_layers::BatchNorm2dConfig::new(8).init().unwrap();
/// assert_eq!(bn.running_var().value.as_slice(), &[1.0; 8]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchNorm2dConfig {
    /// Channels `C` (default 1).
    pub num_features: usize,
    /// Added to the variance before the square root (default `1e-5`).
    pub eps: f32,
    /// Weight of the new batch statistic in the running average (default `0.1`).
    pub momentum: f32,
}

impl Default for BatchNorm2dConfig {
    fn default() -> Self {
        BatchNorm2dConfig {
            num_features: 1,
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

impl BatchNorm2dConfig {
    /// `num_features` channels, PyTorch defaults otherwise.
    pub fn new(num_features: usize) -> Self {
        BatchNorm2dConfig {
            num_features,
            ..Default::default()
        }
    }

    /// Builds the layer: `gamma = 1`, `beta = 0`, running mean 0 and variance 1.
    pub fn init(&self) -> Result<BatchNorm2d> {
        let (weight, bias, running_mean, running_var) =
            fresh_state("BatchNorm2d", self.num_features, self.eps, self.momentum)?;
        Ok(BatchNorm2d {
            config: *self,
            weight,
            bias,
            running_mean,
            running_var,
            cache: None,
        })
    }
}

#[derive(Debug)]
struct BnCache {
    x_hat: Tensor4,
    inv_std: Vec<f32>,
    batch_stats: bool,
}

/// Batch normalisation: `[N, C, H, W] -> [N, C, H, W]`.
///
/// PyTorch equivalent: `nn.BatchNorm2d`. Parameters `weight` (gamma) and `bias` (beta), buffers
/// `running_mean` and `running_var`, all of PyTorch shape `[C]` (stored `[C, 1, 1, 1]`).
/// Training needs more than one value per channel (`N*H*W > 1`).
///
/// ```
/// use fracture_layers::{BatchNorm2dConfig, Layer, Mode};
/// use fracture_tensor::Tensor4;
/// let mut bn = BatchNorm2dConfig::new(1).init().unwrap();
/// let x = Tensor4::from_vec([2, 1, 1, 1], vec![1.0, 3.0]).unwrap();
/// let y = bn.forward(&x, Mode::Train).unwrap();
/// assert!((y.as_slice()[0] + 1.0).abs() < 1e-4 && (y.as_slice()[1] - 1.0).abs() < 1e-4);
/// // running mean 0.9*0 + 0.1*2, running var 0.9*1 + 0.1*2 (unbiased variance of {1, 3})
/// assert!((bn.running_mean().value.as_slice()[0] - 0.2).abs() < 1e-6);
/// assert!((bn.running_var().value.as_slice()[0] - 1.1).abs() < 1e-6);
/// ```
#[derive(Debug)]
pub struct BatchNorm2d {
    config: BatchNorm2dConfig,
    weight: Param,
    bias: Param,
    running_mean: Buffer,
    running_var: Buffer,
    cache: Option<BnCache>,
}

impl BatchNorm2d {
    /// The config it was built from.
    pub fn config(&self) -> &BatchNorm2dConfig {
        &self.config
    }
    bn_state!(accessors);

    /// A batch norm with `config` and the given parameters and running statistics (each of
    /// PyTorch shape `[C]`, `C = config.num_features`): how a fused layer hands its state back
    /// as the unfused layer ([`crate::BnReluPool::unfuse`]).
    ///
    /// ```
    /// use fracture_layers::{BatchNorm2d, BatchNorm2dConfig};
    /// let a = BatchNorm2dConfig::new(3).init().unwrap();
    /// let b = BatchNorm2d::from_parts(*a.config(), a.weight().clone(), a.bias().clone(),
    ///     a.running_mean().clone(), a.running_var().clone()).unwrap();
    /// assert_eq!(b.running_var(), a.running_var());
    /// assert!(BatchNorm2d::from_parts(BatchNorm2dConfig::new(2), a.weight().clone(), a.bias().clone(),
    ///     a.running_mean().clone(), a.running_var().clone()).is_err());
    /// ```
    pub fn from_parts(
        config: BatchNorm2dConfig,
        weight: Param,
        bias: Param,
        running_mean: Buffer,
        running_var: Buffer,
    ) -> Result<Self> {
        // Validates the config as `init` does, and gives the expected shape.
        let (w0, ..) = fresh_state(
            "BatchNorm2d",
            config.num_features,
            config.eps,
            config.momentum,
        )?;
        let want = w0.value.shape();
        for (name, shape) in [
            ("weight", weight.value.shape()),
            ("bias", bias.value.shape()),
            ("running_mean", running_mean.value.shape()),
            ("running_var", running_var.value.shape()),
        ] {
            if shape != want {
                return Err(LayersError::shape(
                    "BatchNorm2d",
                    format!("{name} of shape {want:?}"),
                    &shape,
                ));
            }
        }
        Ok(BatchNorm2d {
            config,
            weight,
            bias,
            running_mean,
            running_var,
            cache: None,
        })
    }
}

/// The `N` planes (`H*W` values each) of channel `c`, in batch order.
fn channel_planes(
    data: &[f32],
    n: usize,
    c_total: usize,
    hw: usize,
    c: usize,
) -> impl Iterator<Item = &[f32]> {
    (0..n).map(move |i| &data[(i * c_total + c) * hw..(i * c_total + c + 1) * hw])
}

/// Lanes of independent f64 accumulators: a fixed summation order (deterministic) that the
/// compiler can vectorise, instead of one latency-bound chain.
const LANES: usize = 8;

/// `(sum a_i, sum a_i * b_i)` in f64, lane by lane.
#[inline]
fn lane_sums2(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            s1[i] += x[i] as f64;
            s2[i] += x[i] as f64 * y[i] as f64;
        }
    }
    let (mut r1, mut r2) = (s1.iter().sum::<f64>(), s2.iter().sum::<f64>());
    for (&x, &y) in ta.iter().zip(tb) {
        r1 += x as f64;
        r2 += x as f64 * y as f64;
    }
    (r1, r2)
}

impl Layer for BatchNorm2d {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        "BatchNorm2d"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let [n, c_total, h, w] = x.shape();
        if c_total != self.config.num_features {
            return Err(LayersError::shape(
                "BatchNorm2d",
                format!("input [N, {}, H, W]", self.config.num_features),
                &x.shape(),
            ));
        }
        let hw = h * w;
        let m = n * hw;
        let (mean, inv_std): (Vec<f32>, Vec<f32>) = if mode.is_training() {
            if m < 2 {
                return Err(LayersError::shape(
                    "BatchNorm2d",
                    "more than one value per channel in training mode (N*H*W > 1)",
                    &x.shape(),
                ));
            }
            // Shared with the fused BnReluPool, so both agree bit for bit.
            let stats: Vec<(f64, f64)> = batch_norm_stats(x)
                .into_iter()
                .map(|s| (s.mean, s.var))
                .collect();
            let mom = self.config.momentum as f64;
            let unbias = m as f64 / (m - 1) as f64;
            let rm = self.running_mean.value.as_slice_mut();
            for (r, s) in rm.iter_mut().zip(&stats) {
                *r = ((1.0 - mom) * *r as f64 + mom * s.0) as f32;
            }
            let rv = self.running_var.value.as_slice_mut();
            for (r, s) in rv.iter_mut().zip(&stats) {
                *r = ((1.0 - mom) * *r as f64 + mom * s.1 * unbias) as f32;
            }
            let eps = self.config.eps as f64;
            stats
                .iter()
                .map(|&(mu, var)| (mu as f32, (1.0 / (var + eps).sqrt()) as f32))
                .unzip()
        } else {
            let eps = self.config.eps as f64;
            let mean = self.running_mean.value.as_slice().to_vec();
            let inv_std = self
                .running_var
                .value
                .as_slice()
                .iter()
                .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
                .collect();
            (mean, inv_std)
        };
        let gamma = self.weight.value.as_slice();
        let beta = self.bias.value.as_slice();
        // Both are fully written below (every plane of hw values).
        let mut y = Tensor4::for_overwrite(x.shape());
        let mut x_hat = mode.caches().then(|| Tensor4::for_overwrite(x.shape()));
        if hw > 0 {
            let xs = x.as_slice();
            if let Some(x_hat) = &mut x_hat {
                y.as_slice_mut()
                    .par_chunks_mut(hw)
                    .zip(x_hat.as_slice_mut().par_chunks_mut(hw))
                    .enumerate()
                    .for_each(|(p, (yp, hp))| {
                        let c = p % c_total;
                        let xp = &xs[p * hw..(p + 1) * hw];
                        let (mu, is, g, b) = (mean[c], inv_std[c], gamma[c], beta[c]);
                        for ((yv, hv), &xv) in yp.iter_mut().zip(hp.iter_mut()).zip(xp) {
                            let t = (xv - mu) * is;
                            *hv = t;
                            *yv = t * g + b;
                        }
                    });
            } else {
                y.as_slice_mut()
                    .par_chunks_mut(hw)
                    .enumerate()
                    .for_each(|(p, yp)| {
                        let c = p % c_total;
                        let xp = &xs[p * hw..(p + 1) * hw];
                        // The caching path's arithmetic: Eval and EvalWithGrad agree bit for bit.
                        let (mu, is, g, b) = (mean[c], inv_std[c], gamma[c], beta[c]);
                        for (yv, &xv) in yp.iter_mut().zip(xp) {
                            *yv = (xv - mu) * is * g + b;
                        }
                    });
            }
        }
        self.cache = x_hat.map(|x_hat| BnCache {
            x_hat,
            inv_std,
            batch_stats: mode.is_training(),
        });
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let cache = self.cache.take().ok_or(LayersError::NoForwardCache {
            layer: "BatchNorm2d",
        })?;
        let shape = cache.x_hat.shape();
        if dy.shape() != shape {
            return Err(LayersError::shape(
                "BatchNorm2d",
                format!("upstream gradient of the input's shape {shape:?}"),
                &dy.shape(),
            ));
        }
        let [n, c_total, h, w] = shape;
        let hw = h * w;
        let m = (n * hw) as f64;
        let xh = cache.x_hat.as_slice();
        let dys = dy.as_slice();
        // Per channel: sum(dy), sum(dy * x_hat).
        let sums: Vec<(f64, f64)> = (0..c_total)
            .into_par_iter()
            .map(|c| {
                channel_planes(dys, n, c_total, hw, c)
                    .zip(channel_planes(xh, n, c_total, hw, c))
                    .map(|(dp, hp)| lane_sums2(dp, hp))
                    .fold((0.0, 0.0), |acc, s| (acc.0 + s.0, acc.1 + s.1))
            })
            .collect();
        for (g, s) in self.weight.grad.as_slice_mut().iter_mut().zip(&sums) {
            *g += s.1 as f32;
        }
        for (g, s) in self.bias.grad.as_slice_mut().iter_mut().zip(&sums) {
            *g += s.0 as f32;
        }
        let gamma = self.weight.value.as_slice();
        let mut dx = Tensor4::for_overwrite(shape);
        if hw > 0 {
            let inv_std = &cache.inv_std;
            let batch = cache.batch_stats;
            dx.as_slice_mut()
                .par_chunks_mut(hw)
                .enumerate()
                .for_each(|(p, dxp)| {
                    let c = p % c_total;
                    let k = gamma[c] * inv_std[c];
                    let dyp = &dys[p * hw..(p + 1) * hw];
                    if batch {
                        // dx = gamma*inv_std * (dy - mean(dy) - x_hat * mean(dy*x_hat))
                        let a = (sums[c].0 / m) as f32;
                        let b = (sums[c].1 / m) as f32;
                        let hp = &xh[p * hw..(p + 1) * hw];
                        for ((o, &d), &hv) in dxp.iter_mut().zip(dyp).zip(hp) {
                            *o = k * (d - a - hv * b);
                        }
                    } else {
                        for (o, &d) in dxp.iter_mut().zip(dyp) {
                            *o = k * d;
                        }
                    }
                });
        }
        Ok(dx)
    }

    bn_state!(visitors);

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}
