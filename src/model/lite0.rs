//! EfficientNet-Lite0: a fixed architecture whose state-dict names are those of the ImageNet
//! weights of `efficientnet_pytorch` (`_conv_stem`, `_bn0`, `_blocks.{i}`, `_conv_head`,
//! `_bn1`, `_fc`), so that they load strictly ([`crate::pretrained`]).

use fracture_layers::{
    Activation, BnReluPool, BnReluPoolConfig, Conv2dConfig, InvertedResidualConfig, Sequential,
};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::architecture::{conv_side, Backbone, FeatureMap, MaskSite, SizeBound};
use super::BlockKind;
use crate::error::{Error, Result};

/// The stages of EfficientNet-Lite0: `(repeats, kernel, stride, expand, in, out)`, as
/// `LITE0_BLOCKS` of `../shared/bench/torch_reference.py` and the `efficientnet_pytorch`
/// package; the first block of a stage has the stage's stride and input channels.
pub const LITE0_BLOCKS: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Channels of EfficientNet-Lite0's stem convolution.
pub const LITE0_STEM: usize = 32;
/// Channels of EfficientNet-Lite0's head convolution (the pooled feature vector).
pub const LITE0_HEAD: usize = 1280;

/// EfficientNet-Lite0: `_conv_stem` 3x3/2 -> `_bn0` (+ReLU6) -> `_blocks.0..15`
/// ([`fracture_layers::InvertedResidual`], stages [`LITE0_BLOCKS`]) -> `_conv_head` 1x1 ->
/// `_bn1` (+ReLU6), then the shared head under the names `_dropout` and `_fc`. Batch norms use
/// `eps = 1e-3`, `momentum = 0.01`. Grad-CAM reads `_bn1`, the last map before pooling.
///
/// ```
/// use fracture_nn::model::{Backbone, EfficientNetLite0};
/// let lite0 = EfficientNetLite0 { drop_path: 0.2 };
/// assert_eq!(lite0.downsampling(), 32);
/// assert_eq!(lite0.feature_maps(224)[0].side, 7);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficientNetLite0 {
    /// The stochastic depth ("drop connect") rate: block `i` of `n` drops its residual branch
    /// with probability `drop_path * i / n`, as `efficientnet_pytorch` does; 0 disables it.
    #[serde(default)]
    pub drop_path: f32,
}

impl Default for EfficientNetLite0 {
    /// Stochastic depth 0.2, as the ImageNet training.
    fn default() -> Self {
        EfficientNetLite0 { drop_path: 0.2 }
    }
}

/// Batch norm + ReLU6 as EfficientNet-Lite has them.
fn bn_act(c: usize) -> Result<BnReluPool> {
    Ok(BnReluPoolConfig::new(c)
        .with_pool(false)
        .with_activation(Activation::Relu6)
        .with_eps_momentum(1e-3, 0.01)
        .init()?)
}

impl Backbone for EfficientNetLite0 {
    fn kind(&self) -> BlockKind {
        BlockKind::EfficientNetLite0
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.drop_path) {
            return Err(Error::Config(format!(
                "drop_path must be in [0, 1), got {}",
                self.drop_path
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
        net.push(
            "_conv_stem",
            Conv2dConfig::new(in_channels, LITE0_STEM, 3)
                .with_stride(2)
                .with_padding(1)
                .with_bias(false)
                .init(rng)?,
        )?;
        net.push("_bn0", bn_act(LITE0_STEM)?)?;
        let total: usize = LITE0_BLOCKS.iter().map(|b| b.0).sum();
        let mut blocks = Sequential::new();
        let mut k = 0;
        for &(repeats, kernel, stride, expand, c_in, c_out) in &LITE0_BLOCKS {
            for j in 0..repeats {
                let (c, s) = if j == 0 { (c_in, stride) } else { (c_out, 1) };
                let p = self.drop_path * k as f32 / total as f32;
                let block = InvertedResidualConfig::new(c, c_out, expand, kernel, s)
                    .with_drop_path(p)
                    .init(rng)?;
                blocks.push(k.to_string(), block)?;
                k += 1;
            }
        }
        net.push("_blocks", blocks)?;
        let last = LITE0_BLOCKS[LITE0_BLOCKS.len() - 1].5;
        net.push(
            "_conv_head",
            Conv2dConfig::new(last, LITE0_HEAD, 1)
                .with_bias(false)
                .init(rng)?,
        )?;
        net.push("_bn1", bn_act(LITE0_HEAD)?)?;
        Ok(LITE0_HEAD)
    }

    fn classifier_names(&self) -> (&'static str, &'static str) {
        ("_dropout", "_fc")
    }

    /// Only `_bn1`: the last map before pooling, the map Grad-CAM reads by default.
    fn feature_maps(&self, image_size: usize) -> Vec<FeatureMap> {
        let side = LITE0_BLOCKS
            .iter()
            .fold(conv_side(image_size, 2), |side, b| conv_side(side, b.2));
        vec![FeatureMap {
            path: "_bn1".into(),
            channels: LITE0_HEAD,
            side,
        }]
    }

    /// After `_blocks.10`, the last block of the stride-16 stage (112 channels): fine enough
    /// to point at a fracture (a 14 x 14 grid at 224 px), deep enough to know bone.
    fn mask_site(&self, image_size: usize) -> Option<MaskSite> {
        let mut side = conv_side(image_size, 2);
        let mut stride = 2;
        let mut k = 0;
        for b in &LITE0_BLOCKS {
            side = conv_side(side, b.2);
            stride *= b.2;
            k += b.0;
            if b.5 == 112 {
                return Some(MaskSite {
                    sequence: "_blocks".into(),
                    after: (k - 1).to_string(),
                    channels: b.5,
                    side,
                    stride,
                });
            }
        }
        None
    }

    /// After `_blocks.4`, the end of the stride-8 stage (40 channels): its channel statistics
    /// separate radiographs from photographs, text and microscopy (all 12 of
    /// `not-radiographs` above the 99 % validation cut, where the pooled head features caught
    /// 4; `examples/typicality_layers.rs`).
    fn typicality_site(&self, image_size: usize) -> Option<MaskSite> {
        let mut side = conv_side(image_size, 2);
        let mut stride = 2;
        let mut k = 0;
        for b in &LITE0_BLOCKS[..3] {
            side = conv_side(side, b.2);
            stride *= b.2;
            k += b.0;
        }
        Some(MaskSite {
            sequence: "_blocks".into(),
            after: (k - 1).to_string(),
            channels: LITE0_BLOCKS[2].5,
            side,
            stride,
        })
    }

    fn downsampling(&self) -> usize {
        LITE0_BLOCKS.iter().map(|b| b.2).product::<usize>() * 2
    }

    fn num_stages(&self) -> usize {
        LITE0_BLOCKS.len()
    }

    fn size_bound(&self, in_channels: usize) -> SizeBound {
        // The fixed network: stem, the expand, depthwise and project convolutions of every
        // block, and the head.
        let mut conv_weights = (in_channels * LITE0_STEM * 9) as u128;
        for &(repeats, kernel, _, expand, c_in, c_out) in &LITE0_BLOCKS {
            for j in 0..repeats {
                let c = if j == 0 { c_in } else { c_out };
                let mid = c * expand;
                let expand_w = if expand == 1 { 0 } else { c * mid };
                conv_weights += (expand_w + mid * kernel * kernel + mid * c_out) as u128;
            }
        }
        conv_weights += (LITE0_BLOCKS[LITE0_BLOCKS.len() - 1].5 * LITE0_HEAD) as u128;
        SizeBound {
            stages: LITE0_BLOCKS.len(),
            max_width: LITE0_HEAD,
            max_blocks_per_stage: LITE0_BLOCKS.iter().map(|b| b.0).max().unwrap_or(0),
            conv_weights,
        }
    }

    fn describe(&self) -> String {
        format!("EfficientNet-Lite0, stochastic depth {}", self.drop_path)
    }
}
