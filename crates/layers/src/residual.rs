//! Residual basic block (ResNet-18/34 style).

use fracture_tensor::{relu_backward, relu_forward, Tensor4};
use rand_chacha::ChaCha8Rng;

use crate::batch_norm::{BatchNorm2d, BatchNorm2dConfig};
use crate::conv2d::{Conv2d, Conv2dConfig};
use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode};

/// Configuration of a [`ResidualBlock`].
///
/// PyTorch equivalent: torchvision's `BasicBlock(in_channels, out_channels, stride,
/// downsample)`, with `downsample = Sequential(Conv2d(in, out, 1, stride, bias=False),
/// BatchNorm2d(out))` exactly when `stride != 1` or `in_channels != out_channels`.
/// Default: 1 -> 1 channels, stride 1.
///
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let block = fracture_layers::ResidualBlockConfig::new(16, 32, 2).init(&mut rng).unwrap();
/// assert!(block.has_projection());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResidualBlockConfig {
    /// Input channels `C` (default 1).
    pub in_channels: usize,
    /// Output channels `O` (default 1).
    pub out_channels: usize,
    /// Stride of the first 3x3 conv and of the projection (default 1).
    pub stride: usize,
}

impl Default for ResidualBlockConfig {
    fn default() -> Self {
        ResidualBlockConfig::new(1, 1, 1)
    }
}

impl ResidualBlockConfig {
    /// A block `in_channels -> out_channels` whose first conv has `stride`.
    pub fn new(in_channels: usize, out_channels: usize, stride: usize) -> Self {
        ResidualBlockConfig {
            in_channels,
            out_channels,
            stride,
        }
    }

    /// Builds the block (Kaiming-normal convs without bias, fresh batch norms), drawing the
    /// weights of `conv1`, `conv2`, then the projection from `rng`.
    pub fn init(&self, rng: &mut ChaCha8Rng) -> Result<ResidualBlock> {
        if self.stride == 0 {
            return Err(LayersError::config(
                "ResidualBlock",
                "stride must be positive",
            ));
        }
        let (c, o, s) = (self.in_channels, self.out_channels, self.stride);
        let conv1 = Conv2dConfig::new(c, o, 3)
            .with_stride(s)
            .with_padding(1)
            .with_bias(false)
            .init(rng)?;
        let bn1 = BatchNorm2dConfig::new(o).init()?;
        let conv2 = Conv2dConfig::new(o, o, 3)
            .with_padding(1)
            .with_bias(false)
            .init(rng)?;
        let bn2 = BatchNorm2dConfig::new(o).init()?;
        let downsample = if s != 1 || c != o {
            let conv = Conv2dConfig::new(c, o, 1)
                .with_stride(s)
                .with_bias(false)
                .init(rng)?;
            Some((conv, BatchNorm2dConfig::new(o).init()?))
        } else {
            None
        };
        Ok(ResidualBlock {
            config: *self,
            conv1,
            bn1,
            conv2,
            bn2,
            downsample,
            cache: None,
        })
    }
}

/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`: `[N, C, H, W] -> [N, O, H', W']`
/// with `H' = (H - 1) / stride + 1`.
///
/// `conv1` is 3x3 with the block's stride, `conv2` 3x3 with stride 1 (both padding 1, no bias).
/// The shortcut is the identity, or `downsample.0` (1x1 conv with the stride, no bias) then
/// `downsample.1` (batch norm) when the stride or channel count changes.
///
/// PyTorch equivalent: torchvision's `BasicBlock`; parameter names match its `state_dict`
/// (`conv1.weight`, `bn1.running_mean`, `downsample.0.weight`, `downsample.1.bias`, ...).
///
/// ```
/// use fracture_layers::{Layer, Mode, ResidualBlockConfig};
/// use fracture_tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let mut block = ResidualBlockConfig::new(4, 8, 2).init(&mut rng).unwrap();
/// let y = block.forward(&Tensor4::zeros([2, 4, 9, 9]), Mode::Train).unwrap();
/// assert_eq!(y.shape(), [2, 8, 5, 5]);
/// assert!(block.named_params().iter().any(|(n, _)| n == "downsample.0.weight"));
/// ```
#[derive(Debug)]
pub struct ResidualBlock {
    config: ResidualBlockConfig,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
    /// Inner ReLU output and block output, for the two ReLU backward passes.
    cache: Option<(Tensor4, Tensor4)>,
}

impl ResidualBlock {
    /// The config it was built from.
    pub fn config(&self) -> &ResidualBlockConfig {
        &self.config
    }
    /// `true` if the shortcut is a 1x1 conv + batch norm rather than the identity.
    pub fn has_projection(&self) -> bool {
        self.downsample.is_some()
    }
}

impl Layer for ResidualBlock {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        "ResidualBlock"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let h = self.bn1.forward(&self.conv1.forward(x, mode)?, mode)?;
        let h = relu_forward(&h);
        let mut out = self.bn2.forward(&self.conv2.forward(&h, mode)?, mode)?;
        let short = match &mut self.downsample {
            Some((conv, bn)) => Some(bn.forward(&conv.forward(x, mode)?, mode)?),
            None => None,
        };
        let short = short.as_ref().unwrap_or(x);
        if short.shape() != out.shape() {
            return Err(LayersError::shape(
                "ResidualBlock",
                format!("shortcut of the main path's shape {:?}", out.shape()),
                &short.shape(),
            ));
        }
        for (o, s) in out.as_slice_mut().iter_mut().zip(short.as_slice()) {
            let v = *o + s;
            *o = if v < 0.0 { 0.0 } else { v }; // as relu_forward: NaN propagates
        }
        self.cache = if mode.caches() {
            Some((h, out.clone()))
        } else {
            None
        };
        Ok(out)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let (h, y) = self.cache.take().ok_or(LayersError::NoForwardCache {
            layer: "ResidualBlock",
        })?;
        let d_sum = relu_backward(&y, dy)?;
        let dh = self.conv2.backward(&self.bn2.backward(&d_sum)?)?;
        let dh = relu_backward(&h, &dh)?;
        let mut dx = self.conv1.backward(&self.bn1.backward(&dh)?)?;
        let d_short = match &mut self.downsample {
            Some((conv, bn)) => conv.backward(&bn.backward(&d_sum)?)?,
            None => d_sum,
        };
        if d_short.shape() != dx.shape() {
            return Err(LayersError::shape(
                "ResidualBlock",
                format!("shortcut gradient of the input's shape {:?}", dx.shape()),
                &d_short.shape(),
            ));
        }
        for (a, b) in dx.as_slice_mut().iter_mut().zip(d_short.as_slice()) {
            *a += b;
        }
        Ok(dx)
    }

    fn children(&self) -> Vec<(&str, &dyn Layer)> {
        let mut v: Vec<(&str, &dyn Layer)> = vec![
            ("conv1", &self.conv1),
            ("bn1", &self.bn1),
            ("conv2", &self.conv2),
            ("bn2", &self.bn2),
        ];
        if let Some((conv, bn)) = &self.downsample {
            v.push(("downsample.0", conv));
            v.push(("downsample.1", bn));
        }
        v
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Layer)> {
        let mut v: Vec<(&str, &mut dyn Layer)> = vec![
            ("conv1", &mut self.conv1),
            ("bn1", &mut self.bn1),
            ("conv2", &mut self.conv2),
            ("bn2", &mut self.bn2),
        ];
        if let Some((conv, bn)) = &mut self.downsample {
            v.push(("downsample.0", conv));
            v.push(("downsample.1", bn));
        }
        v
    }

    fn clear_cache(&mut self) {
        self.cache = None;
        self.clear_children_cache();
    }
}
