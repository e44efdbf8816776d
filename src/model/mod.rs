//! Network architectures for grayscale radiographs: [`ModelConfig`] (input, classifier head,
//! ensemble) around one typed [`Architecture`] per model family ([`PlainNet`], [`ResNet`],
//! [`EfficientNetLite`], each a [`Backbone`] in a file of its own), with presets for the
//! benchmark reference model, the phantom demo and real X-rays.
//!
//! Parameter names follow PyTorch's `state_dict` of the equivalent `nn.Module`, so a checkpoint
//! reads naturally in Python: each family documents its feature extractor's names; then come
//! `pool` (global average, or global max and average side by side: [`Head`]), `drop`
//! (dropout) and `fc` (linear to the classes), named `_dropout` and `_fc` in
//! EfficientNet-Lite. An ensemble of several such networks ([`ModelConfig::members`])
//! prefixes member `i`'s names with `members.{i}.`, as an `nn.ModuleList` attribute `members`
//! would.
//!
//! Batch norm, ReLU and max pool run as one fused layer ([`fracture_layers::BnReluPool`], which
//! carries the batch norm's parameters and statistics under the batch norm's name), so the
//! names are exactly those of PyTorch's `nn.Sequential(conv, bn, relu, pool)` with `relu` and
//! `pool` having no state. Grad-CAM ([`crate::GradCam`]) runs the built network as a chain of
//! layers, where the fused layer gives back its batch norm, ReLU and pool
//! ([`fracture_layers::Layer::into_chain`]).
//!
//! A model file stores the description as JSON; files written before the typed description
//! (a flat struct with `block`, `widths`, `blocks_per_stage`, ...) still read, into the same
//! network (`legacy.rs`).

mod architecture;
mod efficientnet_lite;
mod legacy;
mod plain;
mod residual;

pub use architecture::{
    ArchOverrides, Architecture, Backbone, FeatureMap, MaskSite, SizeBound, MASK_HEAD_NAME,
};
pub use efficientnet_lite::{
    round_channels, EfficientNetLite, LiteStage, LiteVariant, LITE_HEAD, LITE_STAGES, LITE_STEM,
};
pub use plain::{PlainNet, PlainStage};
pub use residual::{ResNet, ResStage};

use fracture_layers::{
    DropoutConfig, Ensemble, GlobalAvgMaxPool, GlobalAvgPool, Layer, LinearConfig, Sequential,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The name of a model family (what `--arch` chooses, and the one list of families that the
/// command line's choices and help text come from); the family's description is an
/// [`Architecture`]. Stored as its name with underscores (`"efficientnet_lite1"`).
///
/// ```
/// use fracture_nn::{model::LiteVariant, BlockKind};
/// assert_eq!(serde_json::to_string(&BlockKind::Residual).unwrap(), "\"residual\"");
/// let lite1: BlockKind = "efficientnet-lite1".parse()?;
/// assert_eq!(lite1, BlockKind::EfficientNetLite(LiteVariant::Lite1));
/// assert_eq!(serde_json::to_string(&lite1).unwrap(), "\"efficientnet_lite1\"");
/// assert_eq!(BlockKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>(),
///            ["plain", "residual", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]);
/// # Ok::<(), fracture_nn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// conv3x3-BN-ReLU-maxpool2 stages ([`PlainNet`]; the benchmark reference model).
    Plain,
    /// A stride-2 stem, then residual blocks ([`ResNet`]).
    Residual,
    /// EfficientNet-Lite0, Lite1 or Lite2 ([`EfficientNetLite`]), whose names are those of the
    /// ImageNet weights of `efficientnet_pytorch`.
    EfficientNetLite(LiteVariant),
}

impl BlockKind {
    /// Every family, in the order `--help` lists them.
    pub const ALL: [BlockKind; 5] = [
        BlockKind::Plain,
        BlockKind::Residual,
        BlockKind::EfficientNetLite(LiteVariant::Lite0),
        BlockKind::EfficientNetLite(LiteVariant::Lite1),
        BlockKind::EfficientNetLite(LiteVariant::Lite2),
    ];

    /// The name on the command line: `plain`, `residual`, `efficientnet-lite0`, ...
    pub fn name(self) -> &'static str {
        match self {
            BlockKind::Plain => "plain",
            BlockKind::Residual => "residual",
            BlockKind::EfficientNetLite(v) => v.arch_name(),
        }
    }

    /// Short names also accepted (`lite1`).
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            BlockKind::Plain | BlockKind::Residual => &[],
            BlockKind::EfficientNetLite(v) => v.aliases(),
        }
    }

    /// The family for people: `plain CNN`, `residual CNN`, `EfficientNet-Lite1`.
    pub fn title(self) -> &'static str {
        match self {
            BlockKind::Plain => "plain CNN",
            BlockKind::Residual => "residual CNN",
            BlockKind::EfficientNetLite(v) => v.name(),
        }
    }

    /// One line of help: what the family is.
    pub fn summary(self) -> &'static str {
        match self {
            BlockKind::Plain => "VGG-like stages: conv, batch norm, ReLU, max pool",
            BlockKind::Residual => "residual blocks after a stride-2 stem",
            BlockKind::EfficientNetLite(v) => v.summary(),
        }
    }

    /// The input side the family's preset is made for: the ImageNet weights' native size for
    /// EfficientNet-Lite, 224 px otherwise.
    pub fn native_size(self) -> usize {
        match self {
            BlockKind::EfficientNetLite(v) => v.native_size(),
            BlockKind::Plain | BlockKind::Residual => 224,
        }
    }

    /// Whether the family has a stochastic depth rate (`--drop-path`).
    pub fn has_drop_path(self) -> bool {
        matches!(self, BlockKind::EfficientNetLite(_))
    }

    /// The family's preset for `image_size` px gray radiographs: [`ModelConfig::default`]'s
    /// residual network, the reference plain network, or EfficientNet-Lite as
    /// [`ModelConfig::efficientnet_lite`] describes it.
    pub fn preset(self, image_size: usize) -> ModelConfig {
        match self {
            BlockKind::Plain => ModelConfig::reference(image_size),
            BlockKind::Residual => ModelConfig {
                image_size,
                ..ModelConfig::default()
            },
            BlockKind::EfficientNetLite(v) => ModelConfig::efficientnet_lite(v, image_size),
        }
    }
}

impl std::fmt::Display for BlockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BlockKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let want = s.to_ascii_lowercase().replace('_', "-");
        BlockKind::ALL
            .into_iter()
            .find(|k| k.name() == want || k.aliases().contains(&want.as_str()))
            .ok_or_else(|| {
                let names: Vec<&str> = BlockKind::ALL.iter().map(|k| k.name()).collect();
                Error::Config(format!(
                    "unknown architecture {s:?} (expected one of {})",
                    names.join(", ")
                ))
            })
    }
}

impl Serialize for BlockKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name().replace('-', "_"))
    }
}

impl<'de> Deserialize<'de> for BlockKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
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

    /// What the head does, for people: `"global average pooling"` or `"global max + average
    /// pooling"`.
    pub fn describe(self) -> &'static str {
        match self {
            Head::Avg => "global average pooling",
            Head::AvgMax => "global max + average pooling",
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
/// rebuilds its own network. The feature extractor is the typed [`Architecture`] of its
/// family; the input, the classifier head and the ensemble are shared by all families.
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
#[serde(try_from = "legacy::StoredModelConfig")]
pub struct ModelConfig {
    /// Side of the square grayscale input, in pixels.
    pub image_size: usize,
    /// Input channels (1 for grayscale radiographs).
    pub in_channels: usize,
    /// Number of classes (2: fractured, not_fractured).
    pub num_classes: usize,
    /// The feature extractor: one typed description per family.
    pub arch: Architecture,
    /// Global pooling before the classifier (files written before it existed read as
    /// [`Head::Avg`]).
    pub head: Head,
    /// Dropout probability before the classifier.
    pub dropout: f32,
    /// Networks of this architecture whose logits are averaged ([`Ensemble`]): member `i` is
    /// initialised from seed `seed + i` and trained on its own (see
    /// [`crate::ensemble`]); its tensors are named `members.{i}.<name>`. 1 (the default,
    /// and what files written before it existed read as): one network, tensors named as usual.
    pub members: usize,
    /// A box-mask head ([`fracture_layers::MaskHead`]) on the family's stride-16 map
    /// ([`Backbone::mask_site`]), trained against annotated finding boxes; its map is the
    /// "where" answer of the model. `false` in files written before it existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mask_head: bool,
    /// The typicality bank after `pool` ([`crate::typicality`]), filled at the end of
    /// training: `None` in files written before it existed, and while training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typicality: Option<crate::typicality::TypicalityConfig>,
}

impl Default for ModelConfig {
    /// The default for real radiographs: residual, widths 32-64-128-256, 224 px.
    fn default() -> Self {
        ModelConfig {
            image_size: 224,
            in_channels: 1,
            num_classes: 2,
            arch: ResNet::new(&[32, 64, 128, 256], 1).into(),
            head: Head::Avg,
            dropout: 0.3,
            members: 1,
            mask_head: false,
            typicality: None,
        }
    }
}

impl ModelConfig {
    /// The benchmark reference model of `../shared/bench/torch_reference.py`: four plain stages
    /// 1->32->64->128->256, global average pool, dropout 0.3, linear 256->2.
    pub fn reference(image_size: usize) -> Self {
        ModelConfig {
            image_size,
            arch: PlainNet::new(&[32, 64, 128, 256]).into(),
            ..ModelConfig::default()
        }
    }

    /// A small plain network for the synthetic phantoms (widths 16-32-64-64), trains in minutes.
    pub fn phantom(image_size: usize) -> Self {
        ModelConfig {
            image_size,
            arch: PlainNet::new(&[16, 32, 64, 64]).into(),
            dropout: 0.2,
            ..ModelConfig::default()
        }
    }

    /// EfficientNet-Lite0 for gray `image_size` px radiographs
    /// ([`ModelConfig::efficientnet_lite`]).
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
        ModelConfig::efficientnet_lite(LiteVariant::Lite0, image_size)
    }

    /// EfficientNet-Lite `variant` for gray `image_size` px radiographs: dropout 0.2 before
    /// the classifier (as the ImageNet models), stochastic depth 0.2, global average pooling.
    ///
    /// ```
    /// use fracture_nn::{model::LiteVariant, ModelConfig};
    /// use fracture_nn::layers::Layer;
    /// let net = ModelConfig::efficientnet_lite(LiteVariant::Lite2, 64).build(0)?;
    /// // Lite2's last block projects 208 x 6 channels to 352.
    /// assert_eq!(net.param("_blocks.20._project_conv.weight").unwrap().torch_shape(), [352, 1248, 1, 1]);
    /// # Ok::<(), fracture_nn::Error>(())
    /// ```
    pub fn efficientnet_lite(variant: LiteVariant, image_size: usize) -> Self {
        ModelConfig {
            image_size,
            arch: EfficientNetLite::new(variant).into(),
            dropout: 0.2,
            ..ModelConfig::default()
        }
    }

    /// This description with another feature extractor.
    ///
    /// ```
    /// use fracture_nn::{model::PlainNet, BlockKind, ModelConfig};
    /// let m = ModelConfig::default().with_arch(PlainNet::new(&[8, 16]));
    /// assert_eq!(m.kind(), BlockKind::Plain);
    /// ```
    pub fn with_arch(self, arch: impl Into<Architecture>) -> Self {
        ModelConfig {
            arch: arch.into(),
            ..self
        }
    }

    /// The family's description as a [`Backbone`].
    pub fn backbone(&self) -> &dyn Backbone {
        self.arch.backbone()
    }

    /// The model family.
    ///
    /// ```
    /// use fracture_nn::{BlockKind, ModelConfig};
    /// assert_eq!(ModelConfig::lite0(224).kind().name(), "efficientnet-lite0");
    /// ```
    pub fn kind(&self) -> BlockKind {
        self.backbone().kind()
    }

    /// State-dict prefix of the classifier (the last linear layer): `"_fc."` for
    /// EfficientNet-Lite, `"fc."` otherwise. Parameters outside it are the backbone.
    ///
    /// ```
    /// use fracture_nn::ModelConfig;
    /// assert_eq!(ModelConfig::lite0(224).classifier_prefix(), "_fc.");
    /// assert_eq!(ModelConfig::default().classifier_prefix(), "fc.");
    /// ```
    pub fn classifier_prefix(&self) -> String {
        format!("{}.", self.backbone().classifier_names().1)
    }

    /// Total down-sampling factor of the feature extractor ([`Backbone::downsampling`]).
    ///
    /// ```
    /// use fracture_nn::{model::ResNet, ModelConfig};
    /// assert_eq!(ModelConfig::default().downsampling(), 16);
    /// let pooled = ModelConfig::default().with_arch(ResNet::new(&[32, 64, 128, 256], 1).with_stem_pool(true));
    /// assert_eq!(pooled.downsampling(), 32);
    /// ```
    pub fn downsampling(&self) -> usize {
        self.backbone().downsampling()
    }

    /// The feature maps Grad-CAM may read, shallow to deep, with their sides for this input
    /// ([`Backbone::feature_maps`]).
    ///
    /// ```
    /// use fracture_nn::ModelConfig;
    /// let maps = ModelConfig::default().feature_maps();
    /// let sides: Vec<usize> = maps.iter().map(|m| m.side).collect();
    /// assert_eq!(sides, [112, 56, 28, 14]);
    /// assert_eq!(maps[3].path, "blocks.3");
    /// ```
    pub fn feature_maps(&self) -> Vec<FeatureMap> {
        self.backbone().feature_maps(self.image_size)
    }

    /// One line for people: the family's shape, the head and the ensemble.
    ///
    /// ```
    /// use fracture_nn::ModelConfig;
    /// assert_eq!(
    ///     ModelConfig::phantom(64).describe(),
    ///     "plain CNN, stage widths 16-32-64-64, global average pooling, dropout 0.2"
    /// );
    /// ```
    pub fn describe(&self) -> String {
        format!(
            "{}, {}, dropout {}{}{}",
            self.backbone().describe(),
            self.head.describe(),
            self.dropout,
            if self.members > 1 {
                format!(", ensemble of {} (logits averaged)", self.members)
            } else {
                String::new()
            },
            match (self.mask_head, self.mask_site()) {
                (true, Ok(site)) => format!(
                    ", box-mask head after {}.{} ({} x {} cells, its map is the heatmap)",
                    site.sequence, site.after, site.side, site.side
                ),
                _ => String::new(),
            }
        )
    }

    /// Where the box-mask head sits, if [`ModelConfig::mask_head`] is on: an error if the family
    /// has no place for one or the model is an ensemble.
    pub fn mask_site(&self) -> Result<MaskSite> {
        if self.members > 1 {
            return Err(Error::Config(
                "a box-mask head is not supported on an ensemble (members > 1)".into(),
            ));
        }
        self.backbone().mask_site(self.image_size).ok_or_else(|| {
            Error::Config(format!(
                "{} has no place for a box-mask head (EfficientNet-Lite has)",
                self.backbone().describe()
            ))
        })
    }

    /// The state-dict path of the box-mask head layer, if the model has one.
    ///
    /// ```
    /// use fracture_nn::ModelConfig;
    /// let m = ModelConfig { mask_head: true, ..ModelConfig::lite0(224) };
    /// assert_eq!(m.mask_head_path().as_deref(), Some("_blocks.mask_head"));
    /// assert_eq!(m.mask_site()?.side, 14);
    /// assert_eq!(ModelConfig::lite0(224).mask_head_path(), None);
    /// # Ok::<(), fracture_nn::Error>(())
    /// ```
    pub fn mask_head_path(&self) -> Option<String> {
        if !self.mask_head {
            return None;
        }
        self.mask_site()
            .ok()
            .map(|s| format!("{}.{MASK_HEAD_NAME}", s.sequence))
    }

    /// Checks that the network can be built and that the input survives the down-sampling.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.in_channels == 0 || self.num_classes < 2 {
            return bad(format!(
                "need at least 1 input channel and 2 classes, got {} and {}",
                self.in_channels, self.num_classes
            ));
        }
        self.backbone().validate()?;
        if self.members == 0 {
            return bad("members must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.mask_head {
            self.mask_site()?;
        }
        if let Some(t) = &self.typicality {
            t.validate()?;
            if self.members > 1 {
                return bad("a typicality bank is not supported on an ensemble".into());
            }
        }
        let d = self.downsampling();
        if self.image_size < d {
            return bad(format!(
                "image size {} is smaller than the network's down-sampling factor {d} ({} stages); use at least {d} px or fewer stages",
                self.image_size,
                self.backbone().num_stages()
            ));
        }
        Ok(())
    }

    /// This description without a typicality bank: what training starts from (a bank
    /// describes the features of the weights it was filled with).
    pub fn without_typicality(&self) -> ModelConfig {
        ModelConfig {
            typicality: None,
            ..self.clone()
        }
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

    /// Builds the network with Kaiming-initialised weights drawn from `seed`: the family's
    /// feature extractor ([`Backbone::build_features`]), then `pool`, dropout and the linear
    /// classifier. With several [`ModelConfig::members`], an [`Ensemble`] under the name
    /// `members` whose member `i` is what `self.member().build(seed + i)` builds.
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
        let mut net = Sequential::new();
        let backbone = self.backbone();
        let features = backbone.build_features(self.in_channels, &mut net, &mut rng)?;
        if self.mask_head {
            let site = self.mask_site()?;
            let head = fracture_layers::MaskHead::new(site.channels, &mut rng)?;
            let seq = fracture_layers::find_in_mut(&mut net, &site.sequence)
                .and_then(|l| l.as_sequential_mut())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "the mask head's sequence {} is missing",
                        site.sequence
                    ))
                })?;
            seq.insert_after(&site.after, MASK_HEAD_NAME, Box::new(head))?;
        }
        let (drop, fc) = backbone.classifier_names();
        net.push_boxed("pool", self.head.layer())?;
        if let Some(t) = &self.typicality {
            let bank = Box::new(crate::typicality::TypicalityBank::new(t.clone())?);
            match (
                t.path.rsplit_once('.'),
                backbone.typicality_site(self.image_size),
            ) {
                (None, _) => {
                    net.push_boxed(crate::typicality::TYPICALITY_NAME, bank)?;
                }
                (Some((parent, name)), Some(site)) if parent == site.sequence => {
                    fracture_layers::find_in_mut(&mut net, parent)
                        .and_then(|l| l.as_sequential_mut())
                        .ok_or_else(|| Error::Config(format!("no sequence {parent}")))?
                        .insert_after(&site.after, name.to_string(), bank)?;
                }
                _ => {
                    return Err(Error::Config(format!(
                        "the typicality bank's place {} does not fit the architecture",
                        t.path
                    )))
                }
            }
        }
        net.push(drop, DropoutConfig::new(self.dropout).init(&mut rng)?)?;
        net.push(
            fc,
            LinearConfig::new(self.head.features(features), self.num_classes).init(&mut rng)?,
        )?;
        Ok(net)
    }
}
