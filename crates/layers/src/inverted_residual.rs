//! The inverted-residual block of MobileNetV2 and EfficientNet(-Lite), "MBConv": expand 1x1,
//! depthwise kxk, project 1x1, with an identity shortcut when the shape allows it.

use fracture_tensor::Tensor4;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::batch_norm::{BatchNorm2d, BatchNorm2dConfig};
use crate::bn_relu_pool::{BnReluPool, BnReluPoolConfig};
use crate::conv2d::{Conv2d, Conv2dConfig};
use crate::error::{LayersError, Result};
use crate::layer::{join_name, Layer, Mode, RngStream};
use crate::relu::Activation;

/// Configuration of an [`InvertedResidual`] block.
///
/// PyTorch equivalent: the `MBConvBlock` of `efficientnet_pytorch` for the Lite variants (no
/// squeeze-excite; `_expand_conv` 1x1 - `_bn0` - ReLU6 - `_depthwise_conv` kxk with
/// `groups = channels` and padding `k // 2` - `_bn1` - ReLU6 - `_project_conv` 1x1 - `_bn2`,
/// identity added when `stride == 1` and `in_channels == out_channels`), as written out in
/// `../shared/bench/torch_reference.py` (`MBConv`). Default: 1 -> 1 channels, expand 1, 3x3,
/// stride 1, ReLU6, batch norm `eps = 1e-3`, `momentum = 0.01`, no stochastic depth.
///
/// ```
/// use fracture_layers::InvertedResidualConfig;
/// let cfg = InvertedResidualConfig::new(16, 24, 6, 3, 2);
/// assert_eq!(cfg.mid_channels(), 96);
/// assert!(!cfg.has_shortcut());
/// assert!(InvertedResidualConfig::new(24, 24, 6, 3, 1).has_shortcut());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InvertedResidualConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Expansion ratio: the depthwise convolution runs on `in_channels * expand` channels; 1
    /// means no expansion convolution at all.
    pub expand: usize,
    /// Side of the depthwise kernel (3 or 5 in EfficientNet), padding `kernel / 2`.
    pub kernel: usize,
    /// Stride of the depthwise convolution.
    pub stride: usize,
    /// Activation after `_bn0` and `_bn1`.
    pub activation: Activation,
    /// Batch-norm epsilon.
    pub bn_eps: f32,
    /// Batch-norm momentum (PyTorch convention: weight of the new statistic).
    pub bn_momentum: f32,
    /// Stochastic depth ("drop connect"): in training, the residual branch of each image is
    /// dropped with this probability and the kept ones scaled by `1 / (1 - p)`. Only blocks
    /// with a shortcut use it. 0 disables it.
    pub drop_path: f32,
}

impl Default for InvertedResidualConfig {
    fn default() -> Self {
        InvertedResidualConfig::new(1, 1, 1, 3, 1)
    }
}

impl InvertedResidualConfig {
    /// A block `in_channels -> out_channels` with expansion `expand`, a `kernel x kernel`
    /// depthwise convolution of `stride`, and EfficientNet's defaults otherwise.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        expand: usize,
        kernel: usize,
        stride: usize,
    ) -> Self {
        InvertedResidualConfig {
            in_channels,
            out_channels,
            expand,
            kernel,
            stride,
            activation: Activation::Relu6,
            bn_eps: 1e-3,
            bn_momentum: 0.01,
            drop_path: 0.0,
        }
    }

    /// Same config with stochastic depth probability `p`.
    pub fn with_drop_path(mut self, p: f32) -> Self {
        self.drop_path = p;
        self
    }

    /// Channels of the depthwise convolution, `in_channels * expand`.
    pub fn mid_channels(&self) -> usize {
        self.in_channels * self.expand
    }

    /// `true` when the block adds its input to its output (stride 1, same channels).
    pub fn has_shortcut(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }

    /// Builds the block: Kaiming-normal convolutions without bias drawn from `rng` in the order
    /// expand, depthwise, project; fresh batch norms. `seed` seeds the stochastic-depth stream.
    pub fn init(&self, rng: &mut ChaCha8Rng) -> Result<InvertedResidual> {
        let bad = |m: String| Err(LayersError::config("InvertedResidual", m));
        if self.in_channels == 0 || self.out_channels == 0 || self.expand == 0 {
            return bad(format!(
                "channels and expansion must be positive, got {} -> {} with expansion {}",
                self.in_channels, self.out_channels, self.expand
            ));
        }
        if self.kernel == 0 || self.kernel.is_multiple_of(2) || self.stride == 0 {
            return bad(format!(
                "the depthwise kernel must be odd and the stride positive, got kernel {} stride {}",
                self.kernel, self.stride
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return bad(format!(
                "the stochastic depth probability must lie in [0, 1), got {}",
                self.drop_path
            ));
        }
        let (c, m, o) = (self.in_channels, self.mid_channels(), self.out_channels);
        let bn_act = |ch: usize| {
            BnReluPoolConfig::new(ch)
                .with_pool(false)
                .with_activation(self.activation)
                .with_eps_momentum(self.bn_eps, self.bn_momentum)
                .init()
        };
        let expand = if self.expand != 1 {
            let conv = Conv2dConfig::new(c, m, 1).with_bias(false).init(rng)?;
            Some((conv, bn_act(m)?))
        } else {
            None
        };
        let depthwise = Conv2dConfig::new(m, m, self.kernel)
            .with_stride(self.stride)
            .with_padding(self.kernel / 2)
            .with_groups(m)
            .with_bias(false)
            .init(rng)?;
        let bn1 = bn_act(m)?;
        let project = Conv2dConfig::new(m, o, 1).with_bias(false).init(rng)?;
        let bn2 = BatchNorm2dConfig {
            num_features: o,
            eps: self.bn_eps,
            momentum: self.bn_momentum,
        }
        .init()?;
        let stream = RngStream {
            seed: rng.gen(),
            counter: 0,
        };
        Ok(InvertedResidual {
            config: *self,
            expand,
            depthwise,
            bn1,
            project,
            bn2,
            stream,
            cache: None,
        })
    }
}

/// EfficientNet-Lite's inverted-residual block: `[N, C, H, W] -> [N, O, H', W']`,
/// `H' = (H - 1) / stride + 1`.
///
/// `y = bn2(project(act(bn1(depthwise(act(bn0(expand(x))))))))`, plus `x` when the block has a
/// shortcut ([`InvertedResidualConfig::has_shortcut`]); without expansion (`expand == 1`) the
/// depthwise convolution reads `x` directly. Each batch norm and its activation run as one
/// fused [`BnReluPool`] layer (no pooling).
///
/// PyTorch equivalent: `MBConvBlock` of `efficientnet_pytorch` (Lite: no squeeze-excite,
/// ReLU6); the state-dict names are that module's: `_expand_conv.weight`, `_bn0.*`,
/// `_depthwise_conv.weight`, `_bn1.*`, `_project_conv.weight`, `_bn2.*`.
///
/// ```
/// use fracture_layers::{InvertedResidualConfig, Layer, Mode};
/// use fracture_tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let mut block = InvertedResidualConfig::new(4, 4, 6, 3, 1).init(&mut rng).unwrap();
/// let y = block.forward(&Tensor4::zeros([2, 4, 9, 9]), Mode::Train).unwrap();
/// assert_eq!(y.shape(), [2, 4, 9, 9]);
/// let names: Vec<String> = block.named_params().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names[0], "_expand_conv.weight");
/// assert_eq!(names.last().unwrap(), "_bn2.bias");
/// block.zero_grad();
/// let dx = block.backward(&Tensor4::zeros([2, 4, 9, 9])).unwrap();
/// assert_eq!(dx.shape(), [2, 4, 9, 9]);
/// ```
#[derive(Debug)]
pub struct InvertedResidual {
    config: InvertedResidualConfig,
    expand: Option<(Conv2d, BnReluPool)>,
    depthwise: Conv2d,
    bn1: BnReluPool,
    project: Conv2d,
    bn2: BatchNorm2d,
    stream: RngStream,
    /// Per-image scale of the residual branch of the last training forward (stochastic depth),
    /// empty when every branch was kept unscaled.
    cache: Option<Vec<f32>>,
}

impl InvertedResidual {
    /// The config it was built from.
    pub fn config(&self) -> &InvertedResidualConfig {
        &self.config
    }

    /// Draws the per-image branch scales of one training forward pass (stochastic depth).
    fn draw_scales(&mut self, n: usize) -> Vec<f32> {
        let p = self.config.drop_path;
        let mut rng = ChaCha8Rng::seed_from_u64(self.stream.seed);
        rng.set_stream(self.stream.counter);
        self.stream.counter += 1;
        (0..n)
            .map(|_| {
                if rng.gen::<f32>() < p {
                    0.0
                } else {
                    1.0 / (1.0 - p)
                }
            })
            .collect()
    }

    fn uses_drop_path(&self) -> bool {
        self.config.has_shortcut() && self.config.drop_path > 0.0
    }
}

/// Multiplies image `i` of `t` by `scales[i]`.
fn scale_images(t: &mut Tensor4, scales: &[f32]) {
    let per = t.len() / scales.len().max(1);
    for (chunk, &s) in t.as_slice_mut().chunks_mut(per.max(1)).zip(scales) {
        if s != 1.0 {
            chunk.iter_mut().for_each(|v| *v *= s);
        }
    }
}

impl Layer for InvertedResidual {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        "InvertedResidual"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        if x.shape()[1] != self.config.in_channels {
            return Err(LayersError::shape(
                "InvertedResidual",
                format!("input [N, {}, H, W]", self.config.in_channels),
                &x.shape(),
            ));
        }
        let h = match &mut self.expand {
            Some((conv, bn)) => {
                let e = conv.forward(x, mode)?;
                Some(bn.forward_owned(e, mode)?)
            }
            None => None,
        };
        // Each intermediate is owned and handed to the next layer, which keeps it as its
        // backward cache without a copy.
        let d = match h {
            Some(h) => self.depthwise.forward_owned(h, mode)?,
            None => self.depthwise.forward(x, mode)?,
        };
        let d = self.bn1.forward_owned(d, mode)?;
        let p = self.project.forward_owned(d, mode)?;
        let mut y = self.bn2.forward(&p, mode)?;
        drop(p);
        if self.config.has_shortcut() {
            let scales = if mode.is_training() && self.uses_drop_path() {
                let s = self.draw_scales(x.shape()[0]);
                scale_images(&mut y, &s);
                s
            } else {
                Vec::new()
            };
            for (o, &v) in y.as_slice_mut().iter_mut().zip(x.as_slice()) {
                *o += v;
            }
            self.cache = mode.caches().then_some(scales);
        } else {
            self.cache = mode.caches().then(Vec::new);
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let scales = self.cache.take().ok_or(LayersError::NoForwardCache {
            layer: "InvertedResidual",
        })?;
        let g = if scales.is_empty() {
            self.bn2.backward(dy)?
        } else {
            let mut d = dy.clone();
            scale_images(&mut d, &scales);
            self.bn2.backward(&d)?
        };
        let g = self.project.backward(&g)?;
        let g = self.bn1.backward(&g)?;
        let mut dx = self.depthwise.backward(&g)?;
        drop(g);
        if let Some((conv, bn)) = &mut self.expand {
            let g = bn.backward(&dx)?;
            dx = conv.backward(&g)?;
        }
        if self.config.has_shortcut() {
            if dx.shape() != dy.shape() {
                return Err(LayersError::shape(
                    "InvertedResidual",
                    format!("shortcut gradient of the input's shape {:?}", dx.shape()),
                    &dy.shape(),
                ));
            }
            for (a, &b) in dx.as_slice_mut().iter_mut().zip(dy.as_slice()) {
                *a += b;
            }
        }
        Ok(dx)
    }

    fn children(&self) -> Vec<(&str, &dyn Layer)> {
        let mut v: Vec<(&str, &dyn Layer)> = Vec::with_capacity(6);
        if let Some((conv, bn)) = &self.expand {
            v.push(("_expand_conv", conv));
            v.push(("_bn0", bn));
        }
        v.push(("_depthwise_conv", &self.depthwise));
        v.push(("_bn1", &self.bn1));
        v.push(("_project_conv", &self.project));
        v.push(("_bn2", &self.bn2));
        v
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Layer)> {
        let mut v: Vec<(&str, &mut dyn Layer)> = Vec::with_capacity(6);
        if let Some((conv, bn)) = &mut self.expand {
            v.push(("_expand_conv", conv));
            v.push(("_bn0", bn));
        }
        v.push(("_depthwise_conv", &mut self.depthwise));
        v.push(("_bn1", &mut self.bn1));
        v.push(("_project_conv", &mut self.project));
        v.push(("_bn2", &mut self.bn2));
        v
    }

    fn visit_rng_streams(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut RngStream)) {
        if self.uses_drop_path() {
            f(&join_name(prefix, "drop_path"), &mut self.stream);
        }
    }

    fn visit_rng_streams_ref(&self, prefix: &str, f: &mut dyn FnMut(&str, &RngStream)) {
        if self.uses_drop_path() {
            f(&join_name(prefix, "drop_path"), &self.stream);
        }
    }

    fn clear_cache(&mut self) {
        self.cache = None;
        self.clear_children_cache();
    }
}
