//! Network architectures for grayscale radiographs: a configurable [`ModelConfig`] that builds a
//! [`Sequential`] from `fracture-layers`, with presets for the benchmark reference model, the
//! phantom demo and real X-rays.
//!
//! Parameter names follow PyTorch's `state_dict` of the equivalent `nn.Module`, so a checkpoint
//! reads naturally in Python:
//!
//! - plain stages: `blocks.{i}.0` conv3x3 (no bias), `blocks.{i}.1` BatchNorm2d -> ReLU ->
//!   MaxPool2d(2), exactly `../shared/bench/torch_reference.py` for [`ModelConfig::reference`];
//! - residual stages: `stem.0` conv3x3 stride 2, `stem.1` BN -> ReLU (-> MaxPool2d(2) with
//!   [`ModelConfig::stem_pool`]), then
//!   `blocks.{k}` residual blocks (`conv1`, `bn1`, `conv2`, `bn2`, `downsample.*`), the first of
//!   each stage after the first with stride 2;
//! - then `pool` (global average, or global max and average side by side: [`Head`]), `drop`
//!   (dropout) and `fc` (linear to the classes);
//! - an ensemble of several such networks ([`ModelConfig::members`]) prefixes member `i`'s
//!   names with `members.{i}.`, as an `nn.ModuleList` attribute `members` would.
//!
//! Batch norm, ReLU and max pool run as one fused layer ([`fracture_layers::BnReluPool`], which
//! carries the batch norm's parameters and statistics under the batch norm's name), so the
//! names are exactly those of PyTorch's `nn.Sequential(conv, bn, relu, pool)` with `relu` and
//! `pool` having no state. Grad-CAM ([`crate::GradCam`]) rebuilds the network unfused, where
//! the ReLU output before each pool is `blocks.{i}.2`.

use fracture_layers::{
    Activation, BnReluPoolConfig, Conv2dConfig, DropoutConfig, Ensemble, GlobalAvgMaxPool,
    GlobalAvgPool, InvertedResidualConfig, Layer, LinearConfig, ResidualBlockConfig, Sequential,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which building block the stages use.
///
/// ```
/// use fracture_nn::BlockKind;
/// assert_eq!(serde_json::to_string(&BlockKind::Residual).unwrap(), "\"residual\"");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// conv3x3-BN-ReLU-maxpool2 per stage (VGG-like; the benchmark reference model).
    Plain,
    /// A stride-2 stem, then residual blocks (ResNet basic blocks), stride 2 between stages.
    Residual,
    /// EfficientNet-Lite0 ([`LITE0_BLOCKS`]): a fixed architecture whose state-dict names are
    /// those of the ImageNet weights of `efficientnet_pytorch` (`_conv_stem`, `_bn0`,
    /// `_blocks.{i}`, `_conv_head`, `_bn1`, `_fc`), so they load strictly
    /// ([`crate::pretrained`]). `widths` and `blocks_per_stage` do not apply.
    #[serde(rename = "efficientnet_lite0")]
    EfficientNetLite0,
}

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

/// Channels of EfficientNet-Lite0's stem and head convolutions.
pub const LITE0_STEM: usize = 32;
/// Channels of EfficientNet-Lite0's head convolution (the pooled feature vector).
pub const LITE0_HEAD: usize = 1280;

impl std::str::FromStr for BlockKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "plain" => Ok(BlockKind::Plain),
            "residual" => Ok(BlockKind::Residual),
            "efficientnet-lite0" | "lite0" => Ok(BlockKind::EfficientNetLite0),
            other => Err(Error::Config(format!(
                "unknown architecture {other:?} (expected plain, residual or efficientnet-lite0)"
            ))),
        }
    }
}

/// How the last feature map becomes one vector before the classifier.
///
/// ```
/// use fracture_nn::Head;
/// assert_eq!("avgmax".parse::<Head>()?, Head::AvgMax);
/// assert_eq!(Head::default(), Head::Avg);
/// assert_eq!(Head::AvgMax.features(128), 256);
/// # Ok::<(), fracture_nn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// Global average pooling (`nn.AdaptiveAvgPool2d(1)`): every cell counts equally.
    #[default]
    Avg,
    /// Global max and average pooling concatenated (fastai's `AdaptiveConcatPool2d`): a strong
    /// response in one cell of the map, such as a small fracture, is not diluted by the others.
    AvgMax,
}

impl Head {
    /// Length of the pooled vector for `channels` feature maps.
    pub fn features(self, channels: usize) -> usize {
        match self {
            Head::Avg => channels,
            Head::AvgMax => 2 * channels,
        }
    }

    /// The pooling layer.
    pub fn layer(self) -> Box<dyn Layer> {
        match self {
            Head::Avg => Box::new(GlobalAvgPool::new()),
            Head::AvgMax => Box::new(GlobalAvgMaxPool::new()),
        }
    }
}

impl std::str::FromStr for Head {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "avg" => Ok(Head::Avg),
            "avgmax" | "avg_max" | "concat" => Ok(Head::AvgMax),
            other => Err(Error::Config(format!(
                "unknown head {other:?} (expected avg or avgmax)"
            ))),
        }
    }
}

/// The architecture of a classifier: stored as JSON in every checkpoint, so that a model file
/// rebuilds its own network.
///
/// ```
/// use fracture_nn::ModelConfig;
/// use fracture_nn::layers::Layer;
/// let cfg = ModelConfig::reference(128);
/// let net = cfg.build(0)?;
/// assert_eq!(net.num_params(), 388_834);
/// # Ok::<(), fracture_nn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Side of the square grayscale input, in pixels.
    pub image_size: usize,
    /// Input channels (1 for grayscale radiographs).
    pub in_channels: usize,
    /// Output channels of each stage.
    pub widths: Vec<usize>,
    /// Residual blocks per stage (ignored for [`BlockKind::Plain`], which has one conv per stage).
    pub blocks_per_stage: usize,
    /// Plain or residual stages.
    pub block: BlockKind,
    /// Dropout probability before the classifier.
    pub dropout: f32,
    /// Number of classes (2: fractured, not_fractured).
    pub num_classes: usize,
    /// Global pooling before the classifier (files written before it existed read as
    /// [`Head::Avg`]).
    #[serde(default)]
    pub head: Head,
    /// Residual only: a 2x2 max pool after the stride-2 stem (the stem pooling of PyTorch's
    /// ResNets, `nn.MaxPool2d(2)` here), so that the stages see a quarter of the input side and
    /// a large input costs about what one of half its side costs without it. Files written
    /// before it existed read as `false`.
    #[serde(default)]
    pub stem_pool: bool,
    /// Networks of this architecture whose logits are averaged ([`Ensemble`]): member `i` is
    /// initialised from seed `seed + i` and trained on its own (see
    /// [`crate::ensemble`]); its tensors are named `members.{i}.<name>`. 1 (the default,
    /// and what files written before it existed read as): one network, tensors named as usual.
    #[serde(default = "one")]
    pub members: usize,
    /// EfficientNet-Lite0 only: the stochastic depth ("drop connect") rate; block `i` of `n`
    /// drops its residual branch with probability `drop_path * i / n`, as `efficientnet_pytorch`
    /// does. 0 (the default, and what older files read as) disables it.
    #[serde(default)]
    pub drop_path: f32,
}

fn one() -> usize {
    1
}

impl Default for ModelConfig {
    /// The default for real radiographs: residual, widths 32-64-128-256, 224 px.
    fn default() -> Self {
        ModelConfig {
            image_size: 224,
            in_channels: 1,
            widths: vec![32, 64, 128, 256],
            blocks_per_stage: 1,
            block: BlockKind::Residual,
            dropout: 0.3,
            num_classes: 2,
            head: Head::Avg,
            stem_pool: false,
            members: 1,
            drop_path: 0.0,
        }
    }
}

impl ModelConfig {
    /// The benchmark reference model of `../shared/bench/torch_reference.py`: four plain stages
    /// 1->32->64->128->256, global average pool, dropout 0.3, linear 256->2.
    pub fn reference(image_size: usize) -> Self {
        ModelConfig {
            image_size,
            block: BlockKind::Plain,
            ..ModelConfig::default()
        }
    }

    /// A small plain network for the synthetic phantoms (widths 16-32-64-64), trains in minutes.
    pub fn phantom(image_size: usize) -> Self {
        ModelConfig {
            image_size,
            widths: vec![16, 32, 64, 64],
            block: BlockKind::Plain,
            dropout: 0.2,
            ..ModelConfig::default()
        }
    }

    /// EfficientNet-Lite0 for gray `image_size` px radiographs: dropout 0.2 before the
    /// classifier (as the ImageNet model), stochastic depth 0.2, global average pooling.
    ///
    /// ```
    /// use fracture_nn::ModelConfig;
    /// use fracture_nn::layers::Layer;
    /// let net = ModelConfig::lite0(224).build(0)?;
    /// // The 4,652,008 trainable ImageNet parameters (4,694,073 values with the batch-norm
    /// // statistics), less the 1000-class classifier and two of the stem's three input
    /// // channels (32 x 3 x 3 weights each), plus a 2-class classifier.
    /// assert_eq!(net.num_params(), 4_652_008 - 1_281_000 - 2 * 288 + 2_562);
    /// # Ok::<(), fracture_nn::Error>(())
    /// ```
    pub fn lite0(image_size: usize) -> Self {
        ModelConfig {
            image_size,
            widths: vec![LITE0_STEM, LITE0_HEAD],
            block: BlockKind::EfficientNetLite0,
            dropout: 0.2,
            drop_path: 0.2,
            ..ModelConfig::default()
        }
    }

    /// State-dict prefix of the classifier (the last linear layer): `"_fc."` for
    /// EfficientNet-Lite0, `"fc."` otherwise. Parameters outside it are the backbone.
    ///
    /// ```
    /// use fracture_nn::ModelConfig;
    /// assert_eq!(ModelConfig::lite0(224).classifier_prefix(), "_fc.");
    /// assert_eq!(ModelConfig::default().classifier_prefix(), "fc.");
    /// ```
    pub fn classifier_prefix(&self) -> &'static str {
        match self.block {
            BlockKind::EfficientNetLite0 => "_fc.",
            _ => "fc.",
        }
    }

    /// Total down-sampling factor of the feature extractor.
    ///
    /// ```
    /// use fracture_nn::ModelConfig;
    /// assert_eq!(ModelConfig::default().downsampling(), 16);
    /// let pooled = ModelConfig { stem_pool: true, ..ModelConfig::default() };
    /// assert_eq!(pooled.downsampling(), 32);
    /// ```
    pub fn downsampling(&self) -> usize {
        if self.block == BlockKind::EfficientNetLite0 {
            // The stride-2 stem and four stride-2 stages.
            return 32;
        }
        // Plain: one max pool per stage. Residual: the stride-2 stem (and its pool, if any),
        // then stride 2 between stages.
        let stem_pool = usize::from(self.block == BlockKind::Residual && self.stem_pool);
        1 << (self.widths.len() + stem_pool)
    }

    /// Checks that the network can be built and that the input survives the down-sampling.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.widths.is_empty() || self.widths.contains(&0) {
            return bad(format!(
                "widths must be non-empty and positive, got {:?}",
                self.widths
            ));
        }
        if self.in_channels == 0 || self.num_classes < 2 {
            return bad(format!(
                "need at least 1 input channel and 2 classes, got {} and {}",
                self.in_channels, self.num_classes
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return bad(format!(
                "drop_path must be in [0, 1), got {}",
                self.drop_path
            ));
        }
        if self.block != BlockKind::EfficientNetLite0 && self.drop_path != 0.0 {
            return bad("drop_path applies to EfficientNet-Lite0 only".into());
        }
        if self.block == BlockKind::EfficientNetLite0 && self.stem_pool {
            return bad(
                "stem_pool does not apply to EfficientNet-Lite0 (its stem is fixed)".into(),
            );
        }
        if self.block == BlockKind::Plain && self.stem_pool {
            return bad(
                "stem_pool applies to residual networks only (plain ones have no stem)".into(),
            );
        }
        if self.block == BlockKind::Residual && self.blocks_per_stage == 0 {
            return bad("blocks_per_stage must be at least 1".into());
        }
        if self.members == 0 {
            return bad("members must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        let d = self.downsampling();
        if self.image_size < d {
            return bad(format!(
                "image size {} is smaller than the network's down-sampling factor {d} ({} stages); use at least {d} px or fewer stages",
                self.image_size,
                self.widths.len()
            ));
        }
        Ok(())
    }

    /// The architecture of one member: this one with `members = 1`.
    ///
    /// ```
    /// use fracture_nn::ModelConfig;
    /// let pair = ModelConfig { members: 2, ..ModelConfig::phantom(32) };
    /// assert_eq!(pair.member(), ModelConfig::phantom(32));
    /// ```
    pub fn member(&self) -> ModelConfig {
        ModelConfig {
            members: 1,
            ..self.clone()
        }
    }

    /// Builds the network with Kaiming-initialised weights drawn from `seed`; with several
    /// [`ModelConfig::members`], an [`Ensemble`] under the name `members` whose member `i` is
    /// what `self.member().build(seed + i)` builds.
    ///
    /// ```
    /// use fracture_nn::ModelConfig;
    /// use fracture_nn::layers::Layer;
    /// let one = ModelConfig::phantom(32);
    /// let pair = ModelConfig { members: 2, ..one.clone() }.build(5)?;
    /// assert_eq!(pair.num_params(), 2 * one.build(5)?.num_params());
    /// let (name, p) = &pair.named_params()[0];
    /// assert_eq!(name, "members.0.blocks.0.0.weight");
    /// assert_eq!(p.value, one.build(5)?.named_params()[0].1.value);
    /// # Ok::<(), fracture_nn::Error>(())
    /// ```
    pub fn build(&self, seed: u64) -> Result<Sequential> {
        self.validate()?;
        if self.members > 1 {
            let single = self.member();
            let members = (0..self.members)
                .map(|i| single.build(seed.wrapping_add(i as u64)))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Sequential::new().with("members", Ensemble::new(members)?)?);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        if self.block == BlockKind::EfficientNetLite0 {
            return self.build_lite0(&mut rng);
        }
        let mut blocks = Sequential::new();
        let mut net = Sequential::new();
        let last = *self.widths.last().expect("validated non-empty");
        match self.block {
            BlockKind::Plain => {
                let mut c = self.in_channels;
                for (i, &w) in self.widths.iter().enumerate() {
                    // BN -> ReLU -> MaxPool2d(2) as one fused layer under the BN's name, so
                    // that the state-dict names are those of the unfused stage.
                    let stage = Sequential::new()
                        .with(
                            "0",
                            Conv2dConfig::new(c, w, 3)
                                .with_padding(1)
                                .with_bias(false)
                                .init(&mut rng)?,
                        )?
                        .with("1", BnReluPoolConfig::new(w).init()?)?;
                    blocks.push(i.to_string(), stage)?;
                    c = w;
                }
            }
            BlockKind::EfficientNetLite0 => unreachable!("built by build_lite0"),
            BlockKind::Residual => {
                let w0 = self.widths[0];
                let stem = Sequential::new()
                    .with(
                        "0",
                        Conv2dConfig::new(self.in_channels, w0, 3)
                            .with_stride(2)
                            .with_padding(1)
                            .with_bias(false)
                            .init(&mut rng)?,
                    )?
                    .with(
                        "1",
                        BnReluPoolConfig::new(w0).with_pool(self.stem_pool).init()?,
                    )?;
                net.push("stem", stem)?;
                let mut c = w0;
                let mut k = 0;
                for (i, &w) in self.widths.iter().enumerate() {
                    for j in 0..self.blocks_per_stage {
                        let stride = if i > 0 && j == 0 { 2 } else { 1 };
                        blocks.push(
                            k.to_string(),
                            ResidualBlockConfig::new(c, w, stride).init(&mut rng)?,
                        )?;
                        c = w;
                        k += 1;
                    }
                }
            }
        }
        net.push("blocks", blocks)?;
        net.push_boxed("pool", self.head.layer())?;
        net.push("drop", DropoutConfig::new(self.dropout).init(&mut rng)?)?;
        net.push(
            "fc",
            LinearConfig::new(self.head.features(last), self.num_classes).init(&mut rng)?,
        )?;
        Ok(net)
    }

    /// EfficientNet-Lite0 (see [`BlockKind::EfficientNetLite0`]): `_conv_stem` 3x3/2 -> `_bn0`
    /// (+ReLU6) -> `_blocks.0..15` ([`InvertedResidual`]) -> `_conv_head` 1x1 -> `_bn1` (+ReLU6)
    /// -> `pool` -> `_dropout` -> `_fc`. Batch norms use `eps = 1e-3`, `momentum = 0.01`.
    fn build_lite0(&self, rng: &mut ChaCha8Rng) -> Result<Sequential> {
        let bn_act = |c: usize| {
            BnReluPoolConfig::new(c)
                .with_pool(false)
                .with_activation(Activation::Relu6)
                .with_eps_momentum(1e-3, 0.01)
                .init()
        };
        let mut net = Sequential::new();
        net.push(
            "_conv_stem",
            Conv2dConfig::new(self.in_channels, LITE0_STEM, 3)
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
        net.push_boxed("pool", self.head.layer())?;
        net.push("_dropout", DropoutConfig::new(self.dropout).init(rng)?)?;
        net.push(
            "_fc",
            LinearConfig::new(self.head.features(LITE0_HEAD), self.num_classes).init(rng)?,
        )?;
        Ok(net)
    }
}
