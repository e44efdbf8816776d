//! Fused batch norm, ReLU and optional 2x2 max pooling: [`BnReluPool`] computes
//! `BatchNorm2d -> ReLU -> [MaxPool2d(2)]` of this crate in fewer passes over memory.
//!
//! The layer holds the config, the parameters and running statistics, updates the running
//! statistics from the batch statistics the kernel returns, and owns the kernel's cache between
//! forward and backward. The kernel itself (the passes, the window codes, the AVX2 inner loops,
//! the scheduling) is [`fracture_tensor::bn_act_pool_forward`] and
//! [`fracture_tensor::bn_act_pool_backward`], tested there against a naive oracle.
//!
//! # Why a copy of the input
//! [`Layer::forward`] borrows its input, and the convolution before this layer drops its output
//! once the forward returns, so the training backward (which needs `x_hat` at every position)
//! must keep its own copy. The kernel writes it in the fused pass while the plane is in cache
//! (one streaming write, cheaper than the normalised tensor the unfused batch norm stores plus
//! the ReLU output). [`BnReluPool::forward_owned`] takes the input by value and keeps it without
//! a copy. In [`Mode::EvalWithGrad`] with pooling the input is not needed at all.
//!
//! # Equivalence
//! Outputs agree bit for bit with the unfused chain of [`crate::BatchNorm2d`], [`crate::Relu`]
//! and [`crate::MaxPool2d`] in every mode (and [`Mode::Eval`] with [`Mode::EvalWithGrad`]);
//! gradients agree to f32 rounding (the sums run in f64 in a different order). Odd heights and
//! widths are floored as PyTorch's `MaxPool2d(2)`. Every result is independent of the number
//! of threads.
//!
//! # Speed
//! Forward + backward in training against the unfused chain at the reference model's shapes
//! (batch 32; 32x128x128 to 256x16x16), interleaved in one process on the shared, busy 2-vCPU
//! test machine: about 2x faster (medians 1.6-2.3x across shapes and runs), 2.2-2.6x with
//! [`BnReluPool::forward_owned`] (`cargo bench -p fracture-layers --bench fused`).

use fracture_tensor::{
    bn_act_pool_backward, bn_act_pool_forward, BnActCacheRequest, BnActPoolCache, BnActPoolParams,
    BnActStats, Tensor4,
};

use crate::batch_norm::{fresh_state, BatchNorm2d};
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
    cache: Option<BnActPoolCache>,
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

    /// The unfused chain this layer computes: the [`BatchNorm2d`] (with this layer's
    /// parameters, gradients and running statistics), the activation ([`crate::Relu`] or its
    /// ReLU6 form) and, with pooling, the [`crate::MaxPool2d`] of kernel 2. Their composition
    /// gives the same outputs bit for bit (see the [module docs](self)); what it adds is access
    /// to the activations between them.
    ///
    /// ```
    /// use fracture_layers::{BnReluPoolConfig, Layer, Mode};
    /// use fracture_tensor::Tensor4;
    /// let x = Tensor4::from_vec([1, 2, 4, 4], (0..32).map(|v| (v as f32 * 0.7).sin()).collect()).unwrap();
    /// let mut fused = BnReluPoolConfig::new(2).init().unwrap();
    /// let want = fused.forward(&x, Mode::Eval).unwrap();
    /// let mut h = x.clone();
    /// for mut layer in fused.unfuse() {
    ///     h = layer.forward(&h, Mode::Eval).unwrap();
    /// }
    /// assert_eq!(h, want);
    /// ```
    pub fn unfuse(self) -> Vec<Box<dyn Layer>> {
        let c = self.config;
        let bn = BatchNorm2d::from_parts(
            crate::BatchNorm2dConfig {
                num_features: c.num_features,
                eps: c.eps,
                momentum: c.momentum,
            },
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
        )
        .expect("a built BnReluPool has a valid config and [C] state");
        let mut chain: Vec<Box<dyn Layer>> = vec![Box::new(bn), Box::new(c.activation.layer())];
        if c.pool {
            chain.push(Box::new(
                crate::MaxPool2dConfig::new(2)
                    .init()
                    .expect("kernel 2 is a valid max pool"),
            ));
        }
        chain
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
        let (y, mut cache) = self.run(&x, mode, false)?;
        if let Some(c) = &mut cache {
            c.keep_input(x)?;
        }
        self.cache = cache;
        Ok(y)
    }

    /// Keeps the window-code allocation of a spent cache for the next forward (if it had one).
    fn keep_codes(&mut self, cache: BnActPoolCache) {
        let codes = cache.into_spare_codes();
        if codes.capacity() > 0 {
            self.spare_codes = codes;
        }
    }

    fn kind_str(&self) -> &'static str {
        self.config.kind()
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

    /// The kernel's parameters for a forward in `mode`.
    fn kernel_params(&self, mode: Mode) -> BnActPoolParams<'_> {
        let stats = if mode.is_training() {
            BnActStats::Batch
        } else {
            BnActStats::Given {
                mean: self.running_mean.value.as_slice(),
                var: self.running_var.value.as_slice(),
            }
        };
        BnActPoolParams {
            gamma: self.weight.value.as_slice(),
            beta: self.bias.value.as_slice(),
            stats,
            eps: self.config.eps,
            cap: self.config.activation.cap(),
            pool: self.config.pool,
        }
    }

    /// The forward pass; the returned cache holds a copy of `x` only if `copy_input` (and
    /// backward needs it). In training, updates the running statistics as [`BatchNorm2d`] does
    /// (unbiased variance).
    fn run(
        &mut self,
        x: &Tensor4,
        mode: Mode,
        copy_input: bool,
    ) -> Result<(Tensor4, Option<BnActPoolCache>)> {
        self.clear_cache();
        let shape = x.shape();
        self.check_input(shape, mode)?;
        let request = mode.caches().then(|| BnActCacheRequest {
            copy_input,
            spare_codes: std::mem::take(&mut self.spare_codes),
        });
        let out = bn_act_pool_forward(x, &self.kernel_params(mode), request)?;
        if let Some(stats) = &out.batch_stats {
            let [n, _, h, w] = shape;
            let m = n * h * w;
            let mom = self.config.momentum as f64;
            let unbias = m as f64 / (m - 1) as f64;
            let rm = self.running_mean.value.as_slice_mut();
            for (r, s) in rm.iter_mut().zip(stats) {
                *r = ((1.0 - mom) * *r as f64 + mom * s.mean) as f32;
            }
            let rv = self.running_var.value.as_slice_mut();
            for (r, s) in rv.iter_mut().zip(stats) {
                *r = ((1.0 - mom) * *r as f64 + mom * s.var * unbias) as f32;
            }
        }
        Ok((out.y, out.cache))
    }
}

impl Layer for BnReluPool {
    /// In a [`crate::Sequential`] the fused layer takes the place (and the name, a number `k`)
    /// of the unfused batch norm, with the activation at `k + 1` and the pool at `k + 2`: the
    /// chain is [`BnReluPool::unfuse`] under those names. Under a name that is not a number
    /// (EfficientNet's `_bn1`) there are no such places, and the layer stays whole.
    fn into_chain(self: Box<Self>, name: &str) -> Vec<(String, Box<dyn Layer>)> {
        let (parent, last) = match name.rsplit_once('.') {
            Some((parent, last)) => (parent, last),
            None => ("", name),
        };
        let Ok(k) = last.parse::<usize>() else {
            return vec![(name.to_string(), self)];
        };
        self.unfuse()
            .into_iter()
            .enumerate()
            .map(|(i, layer)| (join_name(parent, &(k + i).to_string()), layer))
            .collect()
    }

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
        let out_shape = self.output_shape(cache.input_shape());
        if dy.shape() != out_shape {
            return Err(LayersError::shape(
                kind,
                format!("upstream gradient of the output's shape {out_shape:?}"),
                &dy.shape(),
            ));
        }
        if cache.needs_input() {
            return Err(LayersError::NoForwardCache { layer: kind });
        }
        let grads = bn_act_pool_backward(&cache, dy)?;
        for (g, d) in self
            .weight
            .grad
            .as_slice_mut()
            .iter_mut()
            .zip(&grads.dgamma)
        {
            *g += d;
        }
        for (g, d) in self.bias.grad.as_slice_mut().iter_mut().zip(&grads.dbeta) {
            *g += d;
        }
        self.keep_codes(cache);
        Ok(grads.dx)
    }

    crate::batch_norm::bn_state!(visitors);

    fn clear_cache(&mut self) {
        if let Some(cache) = self.cache.take() {
            self.keep_codes(cache);
        }
    }
}
