//! 2-D convolution layer over the convolution kernels of `fracture-tensor` (im2col + GEMM for
//! an ordinary convolution, direct kernels for grouped and depthwise ones).

use fracture_tensor::{conv2d_backward, conv2d_forward, ConvParams, ConvWorkspace, Tensor4};
use rand_chacha::ChaCha8Rng;

use crate::error::{LayersError, Result};
use crate::init::kaiming_normal;
use crate::layer::{join_name, Layer, Mode, Param};

/// Configuration of a [`Conv2d`] layer.
///
/// PyTorch equivalent: `nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
/// bias=bias, groups=groups)` (no dilation) with weights from `kaiming_normal_(mode="fan_in",
/// nonlinearity="relu")` and a zero bias. Default: 1 -> 1 channels, 3x3 kernel, stride 1,
/// padding 0, one group, with bias (PyTorch's defaults).
///
/// ```
/// use fracture_layers::Conv2dConfig;
/// use rand::SeedableRng;
/// let cfg = Conv2dConfig::new(1, 32, 3).with_padding(1).with_bias(false);
/// let conv = cfg.init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// assert_eq!(conv.weight().value.shape(), [32, 1, 3, 3]);
/// assert!(conv.bias().is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conv2dConfig {
    /// Input channels `C` (default 1).
    pub in_channels: usize,
    /// Output channels `O` (default 1).
    pub out_channels: usize,
    /// Kernel `[KH, KW]` (default `[3, 3]`).
    pub kernel_size: [usize; 2],
    /// Stride `[SH, SW]` (default `[1, 1]`).
    pub stride: [usize; 2],
    /// Zero padding on each side `[PH, PW]` (default `[0, 0]`).
    pub padding: [usize; 2],
    /// Whether to add a bias (default `true`).
    pub bias: bool,
    /// Channel groups (default 1): `in_channels` and `out_channels` must be multiples of it;
    /// `groups == in_channels` is a depthwise convolution. Configs saved before this field
    /// existed load with 1.
    #[serde(default = "one")]
    pub groups: usize,
}

fn one() -> usize {
    1
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig::new(1, 1, 3)
    }
}

impl Conv2dConfig {
    /// `in_channels -> out_channels` with a square `kernel`, stride 1, no padding, with bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size: [kernel, kernel],
            stride: [1, 1],
            padding: [0, 0],
            bias: true,
            groups: 1,
        }
    }
    /// Same config with stride `s` in both directions.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// Same config with zero padding `p` on every side.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    /// Same config with or without bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// Same config with `groups` channel groups (PyTorch `nn.Conv2d(..., groups=groups)`): the
    /// weight becomes `[O, C / groups, KH, KW]`. [`init`](Conv2dConfig::init) rejects a
    /// `groups` of 0 or one that does not divide both channel counts.
    ///
    /// ```
    /// use fracture_layers::Conv2dConfig;
    /// use rand::SeedableRng;
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    /// // Depthwise 5x5 over 96 channels, as in EfficientNet-Lite.
    /// let dw = Conv2dConfig::new(96, 96, 5).with_padding(2).with_groups(96).with_bias(false);
    /// assert_eq!(dw.init(&mut rng).unwrap().weight().value.shape(), [96, 1, 5, 5]);
    /// assert!(Conv2dConfig::new(96, 96, 3).with_groups(5).init(&mut rng).is_err());
    /// ```
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Builds the layer: weights `N(0, 2 / (C/groups * KH * KW))` (Kaiming, fan-in), zero bias.
    pub fn init(&self, rng: &mut ChaCha8Rng) -> Result<Conv2d> {
        let [kh, kw] = self.kernel_size;
        if self.in_channels == 0 || self.out_channels == 0 || kh == 0 || kw == 0 {
            return Err(LayersError::config(
                "Conv2d",
                format!("channels and kernel size must be positive, got {self:?}"),
            ));
        }
        if self.stride.contains(&0) {
            return Err(LayersError::config(
                "Conv2d",
                format!("stride must be positive, got {:?}", self.stride),
            ));
        }
        let (o, c, g) = (self.out_channels, self.in_channels, self.groups);
        if g == 0 || c % g != 0 || o % g != 0 {
            return Err(LayersError::config(
                "Conv2d",
                format!(
                    "groups must be positive and divide both in_channels ({c}) and \
                     out_channels ({o}), got {g}"
                ),
            ));
        }
        let shape = [o, c / g, kh, kw];
        let weight = Param::new(kaiming_normal(shape, c / g * kh * kw, rng), &shape)?;
        let bias = if self.bias {
            Some(Param::new(Tensor4::zeros([o, 1, 1, 1]), &[o])?)
        } else {
            None
        };
        Ok(Conv2d {
            config: *self,
            weight,
            bias,
            workspace: ConvWorkspace::default(),
            cache: None,
        })
    }

    fn params(&self) -> ConvParams {
        ConvParams {
            stride: self.stride,
            padding: self.padding,
            groups: self.groups,
        }
    }
}

/// 2-D convolution: `[N, C, H, W] -> [N, O, (H + 2PH - KH) / SH + 1, (W + 2PW - KW) / SW + 1]`.
///
/// PyTorch equivalent: `nn.Conv2d` (with `groups`). Parameters `weight`
/// `[O, C / groups, KH, KW]` and optional `bias` `[O]` (stored `[O, 1, 1, 1]`). Keeps one reusable [`ConvWorkspace`] for its scratch buffers.
///
/// ```
/// use fracture_layers::{Conv2dConfig, Layer, Mode};
/// use fracture_tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let mut conv = Conv2dConfig::new(3, 8, 3).with_stride(2).with_padding(1).init(&mut rng).unwrap();
/// let y = conv.forward(&Tensor4::zeros([2, 3, 16, 16]), Mode::Train).unwrap();
/// assert_eq!(y.shape(), [2, 8, 8, 8]);
/// let dx = conv.backward(&Tensor4::zeros(y.shape())).unwrap();
/// assert_eq!(dx.shape(), [2, 3, 16, 16]);
/// ```
#[derive(Debug)]
pub struct Conv2d {
    config: Conv2dConfig,
    weight: Param,
    bias: Option<Param>,
    workspace: ConvWorkspace,
    cache: Option<Tensor4>,
}

impl Conv2d {
    /// The config it was built from.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }
    /// Weight `[O, C / groups, KH, KW]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }
    /// Mutable weight.
    pub fn weight_mut(&mut self) -> &mut Param {
        &mut self.weight
    }
    /// Bias `[O]`, if any.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }
    /// Mutable bias, if any.
    pub fn bias_mut(&mut self) -> Option<&mut Param> {
        self.bias.as_mut()
    }

    fn forward_inner(&mut self, x: &Tensor4) -> Result<Tensor4> {
        if x.shape()[1] != self.config.in_channels {
            return Err(LayersError::shape(
                "Conv2d",
                format!("input [N, {}, H, W]", self.config.in_channels),
                &x.shape(),
            ));
        }
        let b = self.bias.as_ref().map(|b| b.value.as_slice());
        Ok(conv2d_forward(
            x,
            &self.weight.value,
            b,
            self.config.params(),
            &mut self.workspace,
        )?)
    }

    fn backward_inner(&mut self, dy: &Tensor4, need_dx: bool) -> Result<Option<Tensor4>> {
        let x = self
            .cache
            .take()
            .ok_or(LayersError::NoForwardCache { layer: "Conv2d" })?;
        let g = conv2d_backward(
            &x,
            &self.weight.value,
            dy,
            self.config.params(),
            need_dx,
            &mut self.workspace,
        )?;
        self.weight.accumulate_grad(g.dw.as_slice());
        if let Some(b) = &mut self.bias {
            b.accumulate_grad(&g.db);
        }
        Ok(g.dx)
    }
}

impl Layer for Conv2d {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        "Conv2d"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let y = self.forward_inner(x)?;
        self.cache = if mode.caches() { Some(x.clone()) } else { None };
        Ok(y)
    }

    /// Keeps `x` as the backward cache without a copy.
    ///
    /// ```
    /// use fracture_layers::{Conv2dConfig, Layer, Mode};
    /// use fracture_tensor::Tensor4;
    /// use rand::SeedableRng;
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    /// let mut conv = Conv2dConfig::new(2, 3, 3).with_padding(1).init(&mut rng).unwrap();
    /// let x = Tensor4::from_vec([1, 2, 4, 4], (0..32).map(|v| v as f32).collect()).unwrap();
    /// let y = conv.forward(&x, Mode::Train).unwrap();
    /// assert_eq!(conv.forward_owned(x, Mode::Train).unwrap(), y);
    /// assert_eq!(conv.backward(&y).unwrap().shape(), [1, 2, 4, 4]);
    /// ```
    fn forward_owned(&mut self, x: Tensor4, mode: Mode) -> Result<Tensor4> {
        let y = self.forward_inner(&x)?;
        self.cache = mode.caches().then_some(x);
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        self.backward_inner(dy, true)?.ok_or_else(|| {
            LayersError::shape(
                "Conv2d",
                "an input gradient from conv2d_backward",
                &dy.shape(),
            )
        })
    }

    fn backward_params_only(&mut self, dy: &Tensor4) -> Result<()> {
        self.backward_inner(dy, false).map(|_| ())
    }

    fn visit_params<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, &'a mut Param)) {
        f(&join_name(prefix, "weight"), &mut self.weight);
        if let Some(b) = &mut self.bias {
            f(&join_name(prefix, "bias"), b);
        }
    }

    fn visit_params_ref<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Param)) {
        f(&join_name(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(&join_name(prefix, "bias"), b);
        }
    }

    fn clear_cache(&mut self) {
        self.cache = None;
    }
}
