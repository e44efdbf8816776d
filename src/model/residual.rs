//! The residual family: a stride-2 stem, then stages of ResNet basic blocks
//! ([`fracture_layers::ResidualBlock`]).

use fracture_layers::{BnReluPoolConfig, Conv2dConfig, ResidualBlockConfig, Sequential};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::architecture::{check_widths, conv_side, Backbone, FeatureMap, SizeBound};
use super::BlockKind;
use crate::error::{Error, Result};

/// One residual stage: `blocks` basic blocks of `width` channels, the first with `stride`
/// (and a 1x1 projection shortcut when the stride or the width changes).
///
/// ```
/// use fracture_nn::model::ResStage;
/// let s: ResStage = serde_json::from_str(r#"{"width": 64, "blocks": 2, "stride": 2}"#).unwrap();
/// assert_eq!(s, ResStage { width: 64, blocks: 2, stride: 2 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResStage {
    /// Output channels of every block of the stage.
    pub width: usize,
    /// Basic blocks in the stage (at least 1).
    pub blocks: usize,
    /// Stride of the stage's first block: 1 keeps the map side, 2 halves it.
    pub stride: usize,
}

/// A residual network as torchvision's ResNet with basic blocks: `stem.0` conv3x3 stride 2
/// (no bias), `stem.1` BatchNorm2d -> ReLU (-> MaxPool2d(2) with [`ResNet::stem_pool`]), then
/// the blocks of all stages numbered on as `blocks.{k}` (`conv1`, `bn1`, `conv2`, `bn2`,
/// `downsample.0`, `downsample.1`). Grad-CAM reads the last block of a stage.
///
/// ```
/// use fracture_nn::model::{Backbone, ResNet};
/// let net = ResNet::new(&[32, 64, 128, 256], 1);
/// assert_eq!(net.stages[0].stride, 1);
/// assert_eq!(net.stages[1].stride, 2);
/// assert_eq!(net.with_stem_pool(true).downsampling(), 32);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNet {
    /// A 2x2 max pool after the stride-2 stem (the stem pooling of PyTorch's ResNets), so that
    /// the stages see a quarter of the input side.
    pub stem_pool: bool,
    /// The stages, input side first.
    pub stages: Vec<ResStage>,
}

impl ResNet {
    /// Stages of the given widths with `blocks_per_stage` blocks each, stride 1 in the first
    /// stage and 2 in every later one (the shape of every residual model so far); no stem pool.
    pub fn new(widths: &[usize], blocks_per_stage: usize) -> Self {
        ResNet {
            stem_pool: false,
            stages: widths
                .iter()
                .enumerate()
                .map(|(i, &width)| ResStage {
                    width,
                    blocks: blocks_per_stage,
                    stride: if i == 0 { 1 } else { 2 },
                })
                .collect(),
        }
    }

    /// This network with the stem pool on or off.
    pub fn with_stem_pool(mut self, stem_pool: bool) -> Self {
        self.stem_pool = stem_pool;
        self
    }

    fn stem_width(&self) -> usize {
        self.stages.first().map_or(0, |s| s.width)
    }
}

impl Backbone for ResNet {
    fn kind(&self) -> BlockKind {
        BlockKind::Residual
    }

    fn validate(&self) -> Result<()> {
        check_widths(&self.stages.iter().map(|s| s.width).collect::<Vec<_>>())?;
        if self.stages.iter().any(|s| s.blocks == 0) {
            return Err(Error::Config("blocks_per_stage must be at least 1".into()));
        }
        if let Some(s) = self.stages.iter().find(|s| !matches!(s.stride, 1 | 2)) {
            return Err(Error::Config(format!(
                "a residual stage's stride must be 1 or 2, got {}",
                s.stride
            )));
        }
        Ok(())
    }

    fn build_features(
        &self,
        in_channels: usize,
        net: &mut Sequential,
        rng: &mut ChaCha8Rng,
    ) -> Result<usize> {
        let w0 = self.stem_width();
        let stem = Sequential::new()
            .with(
                "0",
                Conv2dConfig::new(in_channels, w0, 3)
                    .with_stride(2)
                    .with_padding(1)
                    .with_bias(false)
                    .init(rng)?,
            )?
            .with(
                "1",
                BnReluPoolConfig::new(w0).with_pool(self.stem_pool).init()?,
            )?;
        net.push("stem", stem)?;
        let mut blocks = Sequential::new();
        let mut c = w0;
        let mut k = 0;
        for s in &self.stages {
            for j in 0..s.blocks {
                let stride = if j == 0 { s.stride } else { 1 };
                blocks.push(
                    k.to_string(),
                    ResidualBlockConfig::new(c, s.width, stride).init(rng)?,
                )?;
                c = s.width;
                k += 1;
            }
        }
        net.push("blocks", blocks)?;
        Ok(c)
    }

    fn feature_maps(&self, image_size: usize) -> Vec<FeatureMap> {
        let mut side = conv_side(image_size, 2);
        if self.stem_pool {
            side /= 2;
        }
        let mut last_block = 0;
        self.stages
            .iter()
            .map(|s| {
                side = conv_side(side, s.stride);
                last_block += s.blocks;
                FeatureMap {
                    path: format!("blocks.{}", last_block - 1),
                    channels: s.width,
                    side,
                }
            })
            .collect()
    }

    fn downsampling(&self) -> usize {
        let stem = if self.stem_pool { 4 } else { 2 };
        stem * self.stages.iter().map(|s| s.stride).product::<usize>()
    }

    fn num_stages(&self) -> usize {
        self.stages.len()
    }

    fn size_bound(&self, in_channels: usize) -> SizeBound {
        // Every block as if it held three full 3x3 convolutions of the stage's width.
        let mut prev = in_channels as u128;
        let mut conv_weights = 0u128;
        for s in &self.stages {
            let w = s.width as u128;
            conv_weights += prev * w * 9 + 3 * (s.blocks.max(1) as u128) * w * w * 9;
            prev = w;
        }
        SizeBound {
            stages: self.stages.len(),
            max_width: self.stages.iter().map(|s| s.width).max().unwrap_or(0),
            max_blocks_per_stage: self.stages.iter().map(|s| s.blocks).max().unwrap_or(0),
            conv_weights,
        }
    }

    fn describe(&self) -> String {
        let join = |f: fn(&ResStage) -> usize| {
            self.stages
                .iter()
                .map(|s| f(s).to_string())
                .collect::<Vec<_>>()
                .join("-")
        };
        format!(
            "residual CNN, stage widths {}, blocks {}, strides {}{}",
            join(|s| s.width),
            join(|s| s.blocks),
            join(|s| s.stride),
            if self.stem_pool {
                ", stem max pool"
            } else {
                ""
            }
        )
    }
}
