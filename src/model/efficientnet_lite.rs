//! EfficientNet-Lite as one family: one stage table ([`LITE_STAGES`]) scaled by a width and a
//! depth multiplier under the Lite rules (stem 32 and head 1280 fixed, the first and last
//! stages never repeated), with Lite0, Lite1 and Lite2 as presets ([`LiteVariant`]). The
//! state-dict names are those of the ImageNet weights of `efficientnet_pytorch` (`_conv_stem`,
//! `_bn0`, `_blocks.{i}`, `_conv_head`, `_bn1`, `_fc`), so that those load strictly
//! ([`crate::pretrained`]); PyTorch equivalent: `efficientnet_pytorch.EfficientNet` built with
//! the Lite settings, as `../shared/bench/torch_reference.py` does.

use fracture_data::Normalization;
use fracture_layers::{
    Activation, BnReluPool, BnReluPoolConfig, Conv2dConfig, InvertedResidualConfig, Sequential,
};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::architecture::{conv_side, Backbone, FeatureMap, MaskSite, SizeBound};
use super::BlockKind;
use crate::error::{Error, Result};

/// One stage of the EfficientNet-Lite table before scaling: `repeats` blocks with a `kernel`
/// depthwise convolution and expansion `expand`, the first of stride `stride`, all writing
/// `channels` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiteStage {
    /// Blocks in the stage.
    pub repeats: usize,
    /// Depthwise kernel side (3 or 5).
    pub kernel: usize,
    /// Stride of the stage's first block.
    pub stride: usize,
    /// Expansion ratio of the inverted residual blocks.
    pub expand: usize,
    /// Output channels of every block of the stage.
    pub channels: usize,
}

const fn stage(
    repeats: usize,
    kernel: usize,
    stride: usize,
    expand: usize,
    channels: usize,
) -> LiteStage {
    LiteStage {
        repeats,
        kernel,
        stride,
        expand,
        channels,
    }
}

/// The base stage table of EfficientNet-Lite (B0's, as `efficientnet_pytorch`'s
/// `blocks_args`): Lite0 uses it as it is, the other variants scale it ([`LiteVariant`]).
pub const LITE_STAGES: [LiteStage; 7] = [
    stage(1, 3, 1, 1, 16),
    stage(2, 3, 2, 6, 24),
    stage(2, 5, 2, 6, 40),
    stage(3, 3, 2, 6, 80),
    stage(3, 5, 1, 6, 112),
    stage(4, 5, 2, 6, 192),
    stage(1, 3, 1, 6, 320),
];

/// Channels of the stem convolution (fixed in every Lite variant).
pub const LITE_STEM: usize = 32;
/// Channels of the head convolution, the pooled feature vector (fixed in every Lite variant).
pub const LITE_HEAD: usize = 1280;

/// A member of the EfficientNet-Lite family: its compound-scaling multipliers and native
/// input size (`../shared/pretrained/README.md`).
///
/// ```
/// use fracture_nn::model::LiteVariant;
/// let repeats: Vec<usize> = LiteVariant::Lite2.stages().iter().map(|s| s.repeats).collect();
/// assert_eq!(repeats, [1, 3, 3, 4, 4, 5, 1]);
/// let widths: Vec<usize> = LiteVariant::Lite2.stages().iter().map(|s| s.channels).collect();
/// assert_eq!(widths, [16, 24, 48, 88, 120, 208, 352]);
/// assert_eq!(LiteVariant::Lite1.native_size(), 240);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiteVariant {
    /// Width 1.0, depth 1.0, 224 px.
    #[default]
    Lite0,
    /// Width 1.0, depth 1.1, 240 px.
    Lite1,
    /// Width 1.1, depth 1.2, 260 px.
    Lite2,
}

impl LiteVariant {
    /// Every variant, smallest first.
    pub const ALL: [LiteVariant; 3] = [LiteVariant::Lite0, LiteVariant::Lite1, LiteVariant::Lite2];

    /// `(width, depth)` multipliers of the compound scaling.
    pub fn multipliers(self) -> (f64, f64) {
        match self {
            LiteVariant::Lite0 => (1.0, 1.0),
            LiteVariant::Lite1 => (1.0, 1.1),
            LiteVariant::Lite2 => (1.1, 1.2),
        }
    }

    /// The input side the ImageNet weights were trained at.
    pub fn native_size(self) -> usize {
        match self {
            LiteVariant::Lite0 => 224,
            LiteVariant::Lite1 => 240,
            LiteVariant::Lite2 => 260,
        }
    }

    /// `"EfficientNet-Lite0"`, ...
    pub fn name(self) -> &'static str {
        match self {
            LiteVariant::Lite0 => "EfficientNet-Lite0",
            LiteVariant::Lite1 => "EfficientNet-Lite1",
            LiteVariant::Lite2 => "EfficientNet-Lite2",
        }
    }

    /// The `--arch` name: `"efficientnet-lite0"`, ...
    pub fn arch_name(self) -> &'static str {
        match self {
            LiteVariant::Lite0 => "efficientnet-lite0",
            LiteVariant::Lite1 => "efficientnet-lite1",
            LiteVariant::Lite2 => "efficientnet-lite2",
        }
    }

    /// Short names also accepted: `"lite0"`, ...
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            LiteVariant::Lite0 => &["lite0"],
            LiteVariant::Lite1 => &["lite1"],
            LiteVariant::Lite2 => &["lite2"],
        }
    }

    /// One line of help.
    pub fn summary(self) -> &'static str {
        match self {
            LiteVariant::Lite0 => "EfficientNet-Lite0 (3.4 M parameters gray, native 224 px)",
            LiteVariant::Lite1 => "EfficientNet-Lite1: 1.1x deeper (4.1 M, native 240 px)",
            LiteVariant::Lite2 => "EfficientNet-Lite2: 1.1x wider, 1.2x deeper (4.8 M, 260 px)",
        }
    }

    /// The stage table scaled for this variant: channels by [`round_channels`], repeats by
    /// `ceil(depth * repeats)` except in the first and the last stage.
    pub fn stages(self) -> Vec<LiteStage> {
        let (width, depth) = self.multipliers();
        let last = LITE_STAGES.len() - 1;
        LITE_STAGES
            .iter()
            .enumerate()
            .map(|(i, s)| LiteStage {
                repeats: if i == 0 || i == last {
                    s.repeats
                } else {
                    (depth * s.repeats as f64).ceil() as usize
                },
                channels: round_channels(s.channels, width),
                ..*s
            })
            .collect()
    }
}

/// `efficientnet_pytorch`'s `round_filters`: `channels * width` rounded to a multiple of 8,
/// never more than 10 % below the exact product.
///
/// ```
/// use fracture_nn::model::round_channels;
/// assert_eq!(round_channels(112, 1.1), 120);
/// assert_eq!(round_channels(40, 1.1), 48);
/// assert_eq!(round_channels(24, 1.0), 24);
/// ```
pub fn round_channels(channels: usize, width: f64) -> usize {
    const DIVISOR: usize = 8;
    let exact = channels as f64 * width;
    let rounded = ((exact + DIVISOR as f64 / 2.0) as usize / DIVISOR * DIVISOR).max(DIVISOR);
    if (rounded as f64) < 0.9 * exact {
        rounded + DIVISOR
    } else {
        rounded
    }
}

/// EfficientNet-Lite: `_conv_stem` 3x3/2 -> `_bn0` (+ReLU6) -> `_blocks.0..n`
/// ([`fracture_layers::InvertedResidual`], the variant's [`LiteVariant::stages`]) ->
/// `_conv_head` 1x1 -> `_bn1` (+ReLU6), then the shared head under the names `_dropout` and
/// `_fc`. Batch norms use `eps = 1e-3`, `momentum = 0.01`. Grad-CAM reads `_bn1`, the last map
/// before pooling.
///
/// ```
/// use fracture_nn::model::{Backbone, EfficientNetLite, LiteVariant};
/// let lite0 = EfficientNetLite::new(LiteVariant::Lite0);
/// assert_eq!(lite0.downsampling(), 32);
/// assert_eq!(lite0.feature_maps(224)[0].side, 7);
/// assert_eq!(EfficientNetLite::new(LiteVariant::Lite2).num_blocks(), 21);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficientNetLite {
    /// Which member of the family (files written before Lite1 and Lite2 existed hold Lite0).
    #[serde(default)]
    pub variant: LiteVariant,
    /// The stochastic depth ("drop connect") rate: block `i` of `n` drops its residual branch
    /// with probability `drop_path * i / n`, as `efficientnet_pytorch` does; 0 disables it.
    #[serde(default)]
    pub drop_path: f32,
}

impl Default for EfficientNetLite {
    /// Lite0 with stochastic depth 0.2, as the ImageNet training.
    fn default() -> Self {
        EfficientNetLite::new(LiteVariant::Lite0)
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

impl EfficientNetLite {
    /// `variant` with stochastic depth 0.2, as the ImageNet training.
    pub fn new(variant: LiteVariant) -> Self {
        EfficientNetLite {
            variant,
            drop_path: 0.2,
        }
    }

    /// This description with another stochastic depth rate.
    pub fn with_drop_path(self, drop_path: f32) -> Self {
        EfficientNetLite { drop_path, ..self }
    }

    /// Number of inverted residual blocks (`_blocks.0` to `_blocks.{n - 1}`).
    pub fn num_blocks(&self) -> usize {
        self.variant.stages().iter().map(|s| s.repeats).sum()
    }

    /// The map after the last block of stage `index`: its site as a [`MaskSite`].
    fn site_after_stage(&self, index: usize, image_size: usize) -> MaskSite {
        let stages = self.variant.stages();
        let mut side = conv_side(image_size, 2);
        let mut stride = 2;
        let mut blocks = 0;
        for s in &stages[..=index] {
            side = conv_side(side, s.stride);
            stride *= s.stride;
            blocks += s.repeats;
        }
        MaskSite {
            sequence: "_blocks".into(),
            after: (blocks - 1).to_string(),
            channels: stages[index].channels,
            side,
            stride,
        }
    }
}

impl Backbone for EfficientNetLite {
    fn kind(&self) -> BlockKind {
        BlockKind::EfficientNetLite(self.variant)
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
            Conv2dConfig::new(in_channels, LITE_STEM, 3)
                .with_stride(2)
                .with_padding(1)
                .with_bias(false)
                .init(rng)?,
        )?;
        net.push("_bn0", bn_act(LITE_STEM)?)?;
        let total = self.num_blocks();
        let mut blocks = Sequential::new();
        let mut c_in = LITE_STEM;
        let mut k = 0;
        for s in self.variant.stages() {
            for j in 0..s.repeats {
                let stride = if j == 0 { s.stride } else { 1 };
                let p = self.drop_path * k as f32 / total as f32;
                let block =
                    InvertedResidualConfig::new(c_in, s.channels, s.expand, s.kernel, stride)
                        .with_drop_path(p)
                        .init(rng)?;
                blocks.push(k.to_string(), block)?;
                c_in = s.channels;
                k += 1;
            }
        }
        net.push("_blocks", blocks)?;
        net.push(
            "_conv_head",
            Conv2dConfig::new(c_in, LITE_HEAD, 1)
                .with_bias(false)
                .init(rng)?,
        )?;
        net.push("_bn1", bn_act(LITE_HEAD)?)?;
        Ok(LITE_HEAD)
    }

    fn classifier_names(&self) -> (&'static str, &'static str) {
        ("_dropout", "_fc")
    }

    /// The ImageNet weights expect `(x - 0.5) / 0.5` of `[0, 1]` pixels.
    fn pretrained_normalization(&self) -> Option<Normalization> {
        Some(Normalization {
            mean: 0.5,
            std: 0.5,
        })
    }

    /// Only `_bn1`: the last map before pooling, the map Grad-CAM reads by default.
    fn feature_maps(&self, image_size: usize) -> Vec<FeatureMap> {
        let side = self
            .variant
            .stages()
            .iter()
            .fold(conv_side(image_size, 2), |side, s| {
                conv_side(side, s.stride)
            });
        vec![FeatureMap {
            path: "_bn1".into(),
            channels: LITE_HEAD,
            side,
        }]
    }

    /// After the last block of the stride-16 stage (stage 5 of 7: `_blocks.10`, 112 channels
    /// in Lite0): fine enough to point at a fracture (a 14 x 14 grid at 224 px), deep enough
    /// to know bone.
    fn mask_site(&self, image_size: usize) -> Option<MaskSite> {
        Some(self.site_after_stage(4, image_size))
    }

    /// After the stride-8 stage (stage 3 of 7: `_blocks.4`, 40 channels in Lite0): its
    /// channel statistics separate radiographs from photographs, text and microscopy (all 12
    /// of `not-radiographs` above the 99 % validation cut, where the pooled head features
    /// caught 4; `examples/typicality_layers.rs`).
    fn typicality_site(&self, image_size: usize) -> Option<MaskSite> {
        Some(self.site_after_stage(2, image_size))
    }

    fn downsampling(&self) -> usize {
        LITE_STAGES.iter().map(|s| s.stride).product::<usize>() * 2
    }

    fn num_stages(&self) -> usize {
        LITE_STAGES.len()
    }

    fn size_bound(&self, in_channels: usize) -> SizeBound {
        // The whole network: stem, the expand, depthwise and project convolutions of every
        // block, and the head.
        let stages = self.variant.stages();
        let mut conv_weights = (in_channels * LITE_STEM * 9) as u128;
        let mut c = LITE_STEM;
        for s in &stages {
            for _ in 0..s.repeats {
                let mid = c * s.expand;
                let expand_w = if s.expand == 1 { 0 } else { c * mid };
                conv_weights += (expand_w + mid * s.kernel * s.kernel + mid * s.channels) as u128;
                c = s.channels;
            }
        }
        conv_weights += (c * LITE_HEAD) as u128;
        SizeBound {
            stages: stages.len(),
            max_width: LITE_HEAD,
            max_blocks_per_stage: stages.iter().map(|s| s.repeats).max().unwrap_or(0),
            conv_weights,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}, stochastic depth {}",
            self.variant.name(),
            self.drop_path
        )
    }
}
