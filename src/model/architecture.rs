//! The architecture description of a model: one typed description per family ([`PlainNet`],
//! [`ResNet`], [`EfficientNetLite`]) behind the [`Backbone`] trait, and the [`Architecture`]
//! enum that a model file stores (tagged by `family`).
//!
//! A family describes its feature extractor only: the layers and their state-dict names, the
//! feature maps Grad-CAM may read with their sizes, the down-sampling and a size bound for
//! files from elsewhere. The classifier head (pooling, dropout, linear), the input and the
//! ensemble are shared by every family and live in [`super::ModelConfig`].

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use fracture_layers::Sequential;

use super::{BlockKind, EfficientNetLite, PlainNet, ResNet};
use crate::error::{Error, Result};
use fracture_data::Normalization;

/// A feature map the network computes: the layer whose output it is, its channels and its
/// side for a given input.
///
/// ```
/// use fracture_nn::model::{Backbone, PlainNet};
/// let maps = PlainNet::new(&[8, 16]).feature_maps(32);
/// assert_eq!(maps[1].path, "blocks.1.2");
/// assert_eq!((maps[1].channels, maps[1].side), (16, 16));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureMap {
    /// State-dict path of the layer whose output this is (`blocks.3`, `blocks.2.2`, `_bn1`):
    /// a target for [`crate::GradCam::with_target`].
    pub path: String,
    /// Channels of the map.
    pub channels: usize,
    /// Side of the (square) map, in cells, for the input side the map was asked for.
    pub side: usize,
}

/// How large a network a description asks for, in the terms the limits of a model file from
/// elsewhere are written in ([`crate::ClassifierMeta::validate`]).
///
/// ```
/// use fracture_nn::model::{Backbone, ResNet};
/// let bound = ResNet::new(&[8, 16], 2).size_bound(1);
/// assert_eq!((bound.stages, bound.max_width, bound.max_blocks_per_stage), (2, 16, 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeBound {
    /// Number of stages.
    pub stages: usize,
    /// Widest stage, in channels.
    pub max_width: usize,
    /// Most blocks in one stage.
    pub max_blocks_per_stage: usize,
    /// An upper bound of the convolution weights of one network.
    pub conv_weights: u128,
}

/// What a model family provides; everything else (the classifier head, ensembles, Grad-CAM's
/// default targets, the model file, `fracture info`) is derived from it. Adding a family means
/// implementing this trait for its description and adding it to [`Architecture`] (see
/// `docs/ARCHITECTURE.md`, "How to add an architecture").
///
/// ```
/// use fracture_nn::model::{Backbone, ResNet};
/// let res = ResNet::new(&[32, 64, 128, 256], 1);
/// assert_eq!(res.downsampling(), 16);
/// assert_eq!(res.feature_maps(224).last().unwrap().side, 14);
/// ```
pub trait Backbone {
    /// The family's name.
    fn kind(&self) -> BlockKind;

    /// Checks the description on its own (positive widths, known strides, ...); the shared
    /// checks (input size against [`Backbone::downsampling`], dropout, ...) are
    /// [`super::ModelConfig::validate`]'s.
    fn validate(&self) -> Result<()>;

    /// Pushes the feature extractor's layers into `net` under their state-dict names, with
    /// initial weights drawn from `rng` in layer order, and returns the channels of the last
    /// feature map (what the classifier head pools).
    fn build_features(
        &self,
        in_channels: usize,
        net: &mut Sequential,
        rng: &mut ChaCha8Rng,
    ) -> Result<usize>;

    /// Names of the classifier's dropout and linear layers (`drop`, `fc` unless the family
    /// follows another naming, as EfficientNet's `_dropout`, `_fc`).
    fn classifier_names(&self) -> (&'static str, &'static str) {
        ("drop", "fc")
    }

    /// The input standardisation the family's published pretrained weights expect, recorded
    /// in a model file imported from them ([`crate::pretrained::import`]); `None` (the
    /// default) when the family has no such weights and a model learns its own from the data.
    fn pretrained_normalization(&self) -> Option<Normalization> {
        None
    }

    /// The feature maps Grad-CAM may choose among by default, shallow to deep, with their
    /// sides for an `image_size` px input ([`crate::GradCam::default_targets`] picks from
    /// them).
    fn feature_maps(&self, image_size: usize) -> Vec<FeatureMap>;

    /// Where a box-mask head ([`crate::ModelConfig::mask_head`]) reads the network at an
    /// `image_size` px input: `None` (the default) when the family has no place for one.
    fn mask_site(&self, _image_size: usize) -> Option<MaskSite> {
        None
    }

    /// Where a typicality bank ([`crate::typicality`]) reads the network: `None` (the
    /// default) puts it after `pool`, on the classifier's input.
    fn typicality_site(&self, _image_size: usize) -> Option<MaskSite> {
        None
    }

    /// Total down-sampling factor of the feature extractor: the smallest input side that
    /// leaves a map of at least one cell.
    fn downsampling(&self) -> usize;

    /// Number of stages (for messages).
    fn num_stages(&self) -> usize;

    /// How large a network this is, for the limits on model files of unknown origin.
    fn size_bound(&self, in_channels: usize) -> SizeBound;

    /// One line for people: family and shape (`fracture info`, the web page, the ONNX doc
    /// string).
    fn describe(&self) -> String;
}

/// The feature extractor of a model, one typed description per family; stored in the model
/// file as a JSON object tagged by `family`.
///
/// ```
/// use fracture_nn::model::{Architecture, PlainNet};
/// let arch: Architecture = PlainNet::new(&[8, 16]).into();
/// let json = serde_json::to_string(&arch).unwrap();
/// assert_eq!(json, r#"{"family":"plain","stages":[{"width":8,"pool":true},{"width":16,"pool":true}]}"#);
/// assert_eq!(serde_json::from_str::<Architecture>(&json).unwrap(), arch);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case", deny_unknown_fields)]
pub enum Architecture {
    /// conv3x3-BN-ReLU(-maxpool2) stages ([`PlainNet`]).
    Plain(PlainNet),
    /// A stride-2 stem, then stages of residual basic blocks ([`ResNet`]).
    Residual(ResNet),
    /// EfficientNet-Lite0, Lite1 or Lite2 ([`EfficientNetLite`]); files written before Lite1
    /// and Lite2 existed are tagged `efficientnet_lite0` and read as Lite0.
    #[serde(rename = "efficientnet_lite", alias = "efficientnet_lite0")]
    EfficientNetLite(EfficientNetLite),
}

impl Architecture {
    /// The description as its family's [`Backbone`].
    pub fn backbone(&self) -> &dyn Backbone {
        match self {
            Architecture::Plain(a) => a,
            Architecture::Residual(a) => a,
            Architecture::EfficientNetLite(a) => a,
        }
    }

    /// A description of family `kind` from the shape parameters every family used to share
    /// (what model files written before the typed description hold, and what `fracture
    /// train`'s `--widths`, `--blocks`, `--stem-pool` and `--drop-path` give): plain stages
    /// of `widths`, each pooled; residual stages of `widths` with `blocks_per_stage` blocks,
    /// stride 2 from the second stage on; EfficientNet-Lite, whose shape its variant fixes,
    /// takes only `drop_path`. A parameter that does not apply to the family must be at its
    /// neutral value (no stem pool, no drop path outside EfficientNet-Lite) or it is an error.
    ///
    /// ```
    /// use fracture_nn::{BlockKind, model::{Architecture, ResNet}};
    /// let a = Architecture::uniform(BlockKind::Residual, &[8, 16], 2, true, 0.0)?;
    /// assert_eq!(a, ResNet::new(&[8, 16], 2).with_stem_pool(true).into());
    /// assert!(Architecture::uniform(BlockKind::Plain, &[8], 1, true, 0.0).is_err());
    /// # Ok::<(), fracture_nn::Error>(())
    /// ```
    pub fn uniform(
        kind: BlockKind,
        widths: &[usize],
        blocks_per_stage: usize,
        stem_pool: bool,
        drop_path: f32,
    ) -> Result<Self> {
        let bad = |m: String| Err(Error::Config(m));
        if !kind.has_drop_path() && drop_path != 0.0 {
            return bad(format!("drop_path does not apply to {}", kind.title()));
        }
        match kind {
            BlockKind::Plain if stem_pool => {
                bad("stem_pool applies to residual networks only (plain ones have no stem)".into())
            }
            BlockKind::Plain => Ok(PlainNet::new(widths).into()),
            BlockKind::Residual => Ok(ResNet::new(widths, blocks_per_stage)
                .with_stem_pool(stem_pool)
                .into()),
            BlockKind::EfficientNetLite(_) if stem_pool => bad(format!(
                "stem_pool does not apply to {} (its stem is fixed)",
                kind.title()
            )),
            BlockKind::EfficientNetLite(v) => {
                Ok(EfficientNetLite::new(v).with_drop_path(drop_path).into())
            }
        }
    }

    /// This description changed as `o` asks: another family (keeping the stage widths where
    /// it has some), other widths, blocks per stage, stem pool or drop path. What `o` leaves
    /// `None` stays as it is. A change that does not apply to the family is an error naming
    /// it.
    ///
    /// ```
    /// use fracture_nn::{BlockKind, model::{ArchOverrides, Architecture, PlainNet, ResNet}};
    /// let plain: Architecture = PlainNet::new(&[16, 32]).into();
    /// let o = ArchOverrides { kind: Some(BlockKind::Residual), blocks_per_stage: Some(2), ..Default::default() };
    /// assert_eq!(plain.with_overrides(&o)?, ResNet::new(&[16, 32], 2).into());
    /// // Without a new family, widths or depth, the stages stay as they are (a stride-1
    /// // second stage here); only the stem pool changes.
    /// let mut res = ResNet::new(&[16, 32], 1);
    /// res.stages[1].stride = 1;
    /// let pooled = ArchOverrides { stem_pool: Some(true), ..Default::default() };
    /// let got = Architecture::from(res.clone()).with_overrides(&pooled)?;
    /// assert_eq!(got, res.with_stem_pool(true).into());
    /// # Ok::<(), fracture_nn::Error>(())
    /// ```
    pub fn with_overrides(&self, o: &ArchOverrides) -> Result<Architecture> {
        let kind = o.kind.unwrap_or(self.backbone().kind());
        if kind == self.backbone().kind() && o.widths.is_none() && o.blocks_per_stage.is_none() {
            // The stages stay as they are (whatever their strides and depths): only the stem
            // pool or the drop path may change.
            return self.edited(o.stem_pool, o.drop_path);
        }
        if let BlockKind::EfficientNetLite(variant) = kind {
            if o.widths.is_some() || o.blocks_per_stage.is_some() || o.stem_pool == Some(true) {
                return Err(Error::Config(format!(
                    "widths, blocks per stage and the stem pool do not apply to {} (its \
                     variant fixes its shape)",
                    kind.title()
                )));
            }
            let drop_path = match self {
                Architecture::EfficientNetLite(l) => l.drop_path,
                _ => EfficientNetLite::default().drop_path,
            };
            return Ok(EfficientNetLite::new(variant)
                .with_drop_path(o.drop_path.unwrap_or(drop_path))
                .into());
        }
        let (widths, blocks, stem_pool) = match self {
            Architecture::Plain(p) => (p.stages.iter().map(|s| s.width).collect(), 1, false),
            Architecture::Residual(r) => (
                r.stages.iter().map(|s| s.width).collect(),
                r.stages.first().map_or(1, |s| s.blocks),
                r.stem_pool,
            ),
            Architecture::EfficientNetLite(_) => match &o.widths {
                Some(w) => (w.clone(), 1, false),
                None => {
                    return Err(Error::Config(format!(
                        "a {} network needs its stage widths ({} has none to keep)",
                        kind.title(),
                        self.backbone().kind().title()
                    )))
                }
            },
        };
        Architecture::uniform(
            kind,
            o.widths.as_deref().unwrap_or(&widths),
            o.blocks_per_stage.unwrap_or(blocks),
            o.stem_pool
                .unwrap_or(stem_pool && kind == BlockKind::Residual),
            o.drop_path.unwrap_or(0.0),
        )
    }
}

impl Architecture {
    /// This description with the stem pool and the drop path set where given; an error where
    /// the family has no such thing.
    fn edited(&self, stem_pool: Option<bool>, drop_path: Option<f32>) -> Result<Architecture> {
        let mut a = self.clone();
        let kind = a.backbone().kind();
        let bad = |m: String| Err(Error::Config(m));
        if drop_path.is_some_and(|p| p != 0.0) && !kind.has_drop_path() {
            return bad(format!("drop_path does not apply to {}", kind.title()));
        }
        match &mut a {
            Architecture::Residual(r) => r.stem_pool = stem_pool.unwrap_or(r.stem_pool),
            Architecture::Plain(_) if stem_pool == Some(true) => {
                return bad(
                    "stem_pool applies to residual networks only (plain ones have no stem)".into(),
                )
            }
            Architecture::EfficientNetLite(_) if stem_pool == Some(true) => {
                return bad(format!(
                    "stem_pool does not apply to {} (its stem is fixed)",
                    kind.title()
                ))
            }
            Architecture::EfficientNetLite(l) => l.drop_path = drop_path.unwrap_or(l.drop_path),
            Architecture::Plain(_) => {}
        }
        Ok(a)
    }
}

/// The local name of the box-mask head in its [`MaskSite::sequence`].
pub const MASK_HEAD_NAME: &str = "mask_head";

/// Where a box-mask head sits: right after the layer `after` of the `Sequential` at path
/// `sequence`, reading a map of `channels` channels and `side` x `side` cells (each `stride`
/// input pixels wide).
///
/// ```
/// use fracture_nn::model::{Backbone, EfficientNetLite};
/// let site = EfficientNetLite::default().mask_site(224).unwrap();
/// assert_eq!((site.sequence.as_str(), site.after.as_str(), site.channels, site.side), ("_blocks", "10", 112, 14));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskSite {
    /// Path of the `Sequential` the head is inserted into.
    pub sequence: String,
    /// Local name of the layer it follows.
    pub after: String,
    /// Channels of the map it reads.
    pub channels: usize,
    /// Side of that map, in cells.
    pub side: usize,
    /// Input pixels per cell (the map's down-sampling).
    pub stride: usize,
}

/// Changes to an [`Architecture`] asked for by name, as `fracture train`'s flags do (see
/// [`Architecture::with_overrides`]); `None` keeps what the description has.
///
/// ```
/// use fracture_nn::model::ArchOverrides;
/// let o = ArchOverrides { widths: Some(vec![8, 16]), ..Default::default() };
/// assert!(o.kind.is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArchOverrides {
    /// Another family.
    pub kind: Option<BlockKind>,
    /// Other stage widths (plain and residual).
    pub widths: Option<Vec<usize>>,
    /// Residual blocks in every stage.
    pub blocks_per_stage: Option<usize>,
    /// The residual stem's max pool on or off.
    pub stem_pool: Option<bool>,
    /// EfficientNet-Lite's stochastic depth rate.
    pub drop_path: Option<f32>,
}

impl From<PlainNet> for Architecture {
    fn from(a: PlainNet) -> Self {
        Architecture::Plain(a)
    }
}

impl From<ResNet> for Architecture {
    fn from(a: ResNet) -> Self {
        Architecture::Residual(a)
    }
}

impl From<EfficientNetLite> for Architecture {
    fn from(a: EfficientNetLite) -> Self {
        Architecture::EfficientNetLite(a)
    }
}

/// Side of a map after a convolution of odd kernel `k`, padding `k / 2` and stride `s`
/// (`floor((n - 1) / s) + 1`, as PyTorch computes it).
pub(crate) fn conv_side(n: usize, stride: usize) -> usize {
    n.saturating_sub(1) / stride + 1
}

/// Checks that stage widths are non-empty and positive.
pub(crate) fn check_widths(widths: &[usize]) -> Result<()> {
    if widths.is_empty() || widths.contains(&0) {
        return Err(Error::Config(format!(
            "widths must be non-empty and positive, got {widths:?}"
        )));
    }
    Ok(())
}
