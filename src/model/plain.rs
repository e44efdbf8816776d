//! The plain (VGG-like) family: stages of conv3x3 - BatchNorm2d - ReLU, each optionally
//! followed by a 2x2 max pool; the benchmark reference model and the phantom demo.

use fracture_layers::{BnReluPoolConfig, Conv2dConfig, Sequential};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::architecture::{check_widths, Backbone, FeatureMap, SizeBound};
use super::BlockKind;
use crate::error::Result;

/// One plain stage: `Conv2d(c, width, 3, padding=1, bias=False)`, `BatchNorm2d(width)`,
/// `ReLU`, and with `pool` a `MaxPool2d(2)`.
///
/// ```
/// use fracture_nn::model::PlainStage;
/// let s: PlainStage = serde_json::from_str(r#"{"width": 8, "pool": false}"#).unwrap();
/// assert_eq!(s, PlainStage { width: 8, pool: false });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainStage {
    /// Output channels.
    pub width: usize,
    /// A 2x2 max pool (stride 2) after the ReLU: the stage halves the map side.
    pub pool: bool,
}

/// A plain network: `blocks.{i}` is stage `i` as PyTorch's
/// `nn.Sequential(nn.Conv2d(..., 3, padding=1, bias=False), nn.BatchNorm2d, nn.ReLU,
/// nn.MaxPool2d(2))`, so `blocks.{i}.0` holds the convolution and `blocks.{i}.1` the batch
/// norm. Batch norm, ReLU and pool run as one fused layer under the batch norm's name
/// ([`fracture_layers::BnReluPool`]); Grad-CAM reads `blocks.{i}.2`, the ReLU output before
/// the pool.
///
/// ```
/// use fracture_nn::model::{Backbone, PlainNet};
/// let net = PlainNet::new(&[32, 64, 128, 256]);
/// assert_eq!(net.downsampling(), 16);
/// assert!(net.stages.iter().all(|s| s.pool));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainNet {
    /// The stages, input side first.
    pub stages: Vec<PlainStage>,
}

impl PlainNet {
    /// Stages of the given widths, each pooled (the shape of every plain model so far).
    pub fn new(widths: &[usize]) -> Self {
        PlainNet {
            stages: widths
                .iter()
                .map(|&width| PlainStage { width, pool: true })
                .collect(),
        }
    }
}

impl Backbone for PlainNet {
    fn kind(&self) -> BlockKind {
        BlockKind::Plain
    }

    fn validate(&self) -> Result<()> {
        check_widths(&self.stages.iter().map(|s| s.width).collect::<Vec<_>>())
    }

    fn build_features(
        &self,
        in_channels: usize,
        net: &mut Sequential,
        rng: &mut ChaCha8Rng,
    ) -> Result<usize> {
        let mut blocks = Sequential::new();
        let mut c = in_channels;
        for (i, s) in self.stages.iter().enumerate() {
            let stage = Sequential::new()
                .with(
                    "0",
                    Conv2dConfig::new(c, s.width, 3)
                        .with_padding(1)
                        .with_bias(false)
                        .init(rng)?,
                )?
                .with(
                    "1",
                    BnReluPoolConfig::new(s.width).with_pool(s.pool).init()?,
                )?;
            blocks.push(i.to_string(), stage)?;
            c = s.width;
        }
        net.push("blocks", blocks)?;
        Ok(c)
    }

    fn feature_maps(&self, image_size: usize) -> Vec<FeatureMap> {
        let mut side = image_size;
        self.stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // The map is read before the stage's pool.
                let map = FeatureMap {
                    path: format!("blocks.{i}.2"),
                    channels: s.width,
                    side,
                };
                if s.pool {
                    side /= 2;
                }
                map
            })
            .collect()
    }

    fn downsampling(&self) -> usize {
        1 << self.stages.iter().filter(|s| s.pool).count()
    }

    fn num_stages(&self) -> usize {
        self.stages.len()
    }

    fn size_bound(&self, in_channels: usize) -> SizeBound {
        let mut prev = in_channels as u128;
        let mut conv_weights = 0u128;
        for s in &self.stages {
            conv_weights += prev * s.width as u128 * 9;
            prev = s.width as u128;
        }
        SizeBound {
            stages: self.stages.len(),
            max_width: self.stages.iter().map(|s| s.width).max().unwrap_or(0),
            max_blocks_per_stage: 1,
            conv_weights,
        }
    }

    fn describe(&self) -> String {
        let widths: Vec<String> = self.stages.iter().map(|s| s.width.to_string()).collect();
        let unpooled = self.stages.iter().filter(|s| !s.pool).count();
        format!(
            "plain CNN, stage widths {}{}",
            widths.join("-"),
            match unpooled {
                0 => String::new(),
                n => format!(" ({n} stage(s) without max pool)"),
            }
        )
    }
}
