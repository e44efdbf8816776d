//! A trained fracture classifier: the network plus everything prediction needs (architecture,
//! input size and resize mode, normalisation, class names, operating threshold, provenance),
//! saved as one safetensors file.
//!
//! The file is a `fracture-layers` model checkpoint whose `__metadata__` carries the entry
//! `fracture_nn` ([`META_KEY`]): a JSON [`ClassifierMeta`]. Opening it in Python:
//!
//! ```text
//! from safetensors import safe_open
//! with safe_open("model.safetensors", "np") as f:
//!     print(f.metadata()["fracture_nn"]); print(f.get_tensor("fc.weight").shape)
//! ```

use std::path::Path;

use fracture_data::{Normalization, PreprocessConfig};
use fracture_layers::{checkpoint, Sequential};
use fracture_tensor::Tensor4;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::tta::{predict_probs, Tta};

/// Metadata key of the classifier description inside a model file.
pub const META_KEY: &str = "fracture_nn";

/// Where a model came from.
///
/// ```
/// let p = fracture_nn::Provenance::default();
/// assert_eq!(p.crate_version, env!("CARGO_PKG_VERSION"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Version of fracture-nn that trained it.
    pub crate_version: String,
    /// Training data (folder path, or `phantoms(...)`).
    pub data: String,
    /// Seed of the run.
    pub seed: u64,
    /// Epochs run.
    pub epochs: usize,
    /// Epoch whose weights these are (best validation ROC-AUC).
    pub best_epoch: usize,
    /// Validation ROC-AUC of these weights.
    pub val_auc: Option<f64>,
    /// Seconds since the Unix epoch when the file was written.
    pub created_unix: u64,
    /// The local validation that set this copy's threshold (`fracture validate
    /// --write-model`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_validation: Option<crate::validation::LocalRecord>,
}

impl Default for Provenance {
    fn default() -> Self {
        Provenance {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            data: String::new(),
            seed: 0,
            epochs: 0,
            best_epoch: 0,
            val_auc: None,
            created_unix: 0,
            local_validation: None,
        }
    }
}

/// Everything besides the weights that a model file carries.
///
/// ```
/// use fracture_nn::{ClassifierMeta, ModelConfig};
/// let meta = ClassifierMeta::new(ModelConfig::phantom(64), fracture_nn::data::Normalization { mean: 0.5, std: 0.25 });
/// assert_eq!(meta.class_names, ["fractured", "not_fractured"]);
/// assert_eq!(meta.threshold, 0.5);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierMeta {
    /// The architecture (rebuilds the network).
    pub model: ModelConfig,
    /// How an image file becomes the network's input (size, resize mode, decode limits).
    pub preprocess: PreprocessConfig,
    /// Standardisation computed on the training split.
    pub normalization: Normalization,
    /// Class names by index (sorted folder names).
    pub class_names: Vec<String>,
    /// Index of the positive class (fractured).
    pub positive_class: usize,
    /// Operating threshold on P(fractured), chosen on the validation split.
    pub threshold: f64,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    /// Where the model came from.
    pub provenance: Provenance,
    /// Test-time augmentation that prediction and evaluation apply (chosen on validation by
    /// the trainer; files written before it existed read as [`Tta::Off`]).
    #[serde(default)]
    pub tta: Tta,
}

impl ClassifierMeta {
    /// Metadata for `model` with the default classes, threshold 0.5 and empty provenance.
    pub fn new(model: ModelConfig, normalization: Normalization) -> Self {
        ClassifierMeta {
            preprocess: PreprocessConfig {
                image_size: model.image_size,
                ..PreprocessConfig::default()
            },
            model,
            normalization,
            class_names: fracture_metrics::CLASS_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            positive_class: fracture_metrics::FRACTURED,
            threshold: 0.5,
            threshold_rule: "default 0.5".into(),
            provenance: Provenance::default(),
            tta: Tta::Off,
        }
    }

    /// How an image becomes the network's input, with this model's numbers: the formula
    /// `fracture info` prints and the ONNX export states (the input of an exported graph is
    /// the result of it).
    ///
    /// ```
    /// use fracture_nn::{ClassifierMeta, ModelConfig};
    /// let meta = ClassifierMeta::new(ModelConfig::phantom(64), fracture_nn::data::Normalization { mean: 0.5, std: 0.25 });
    /// assert!(meta.input_formula().starts_with("x = (p / 255 - 0.5) / 0.25"));
    /// ```
    pub fn input_formula(&self) -> String {
        let n = self.normalization;
        let s = self.preprocess.image_size;
        format!(
            "x = (p / 255 - {}) / {} (float32, i.e. (p / 255 - mean) * (1 / std)), p the 8-bit \
             gray value (BT.601 luma of colour images) after a {} resize to {s} x {s} px \
             (triangle filter{})",
            n.mean,
            n.std,
            self.preprocess.resize_mode.name(),
            match self.preprocess.resize_mode {
                fracture_data::ResizeMode::Letterbox => {
                    format!(", longest side to {s}, black padding, centred")
                }
                fracture_data::ResizeMode::Stretch => String::new(),
            }
        )
    }

    /// Largest channel width a model file may ask for (bounds what opening it allocates).
    pub const MAX_WIDTH: usize = 4096;
    /// Most stages a model file may ask for.
    pub const MAX_STAGES: usize = 16;
    /// Most ensemble members a model file may ask for.
    pub const MAX_MEMBERS: usize = 16;
    /// Most residual blocks per stage a model file may ask for.
    pub const MAX_BLOCKS_PER_STAGE: usize = 64;
    /// Largest input side a model file may ask for (activations grow with its square).
    pub const MAX_MODEL_IMAGE_SIZE: usize = 1024;
    /// Most convolution weights (the family's [`crate::model::SizeBound`] times the members) a
    /// model file may ask for; EfficientNet-Lite0 has about 3.4 million parameters in all.
    pub const MAX_CONV_WEIGHTS: u128 = 64_000_000;

    /// Checks every field, so that nothing downstream can panic or run away on a model file's
    /// values: two distinct non-empty class names matching the network's outputs, a positive
    /// class among them, a threshold in `[0, 1]`, a finite mean and a positive finite std, an
    /// input size within [`PreprocessConfig::MAX_IMAGE_SIZE`] equal in the architecture and the
    /// preprocessing, and an architecture of bounded size that builds. The error names the
    /// field ([`Error::Config`] with `field `name`: ...`).
    ///
    /// ```
    /// use fracture_nn::{ClassifierMeta, ModelConfig};
    /// let mut meta = ClassifierMeta::new(ModelConfig::phantom(32), fracture_nn::data::Normalization { mean: 0.5, std: 0.25 });
    /// meta.validate().unwrap();
    /// meta.threshold = 5.0;
    /// assert!(meta.validate().unwrap_err().to_string().contains("`threshold`"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let field =
            |name: &str, what: String| Err(Error::Config(format!("field `{name}`: {what}")));
        let m = &self.model;
        if m.num_classes != 2 {
            return field(
                "model.num_classes",
                format!("must be 2 (fractured or not), got {}", m.num_classes),
            );
        }
        if self.class_names.len() != m.num_classes {
            return field(
                "class_names",
                format!(
                    "must hold {} names (one per network output), got {:?}",
                    m.num_classes, self.class_names
                ),
            );
        }
        if self.class_names.iter().any(|n| n.trim().is_empty())
            || self.class_names[0] == self.class_names[1]
        {
            return field(
                "class_names",
                format!("must be distinct and non-empty, got {:?}", self.class_names),
            );
        }
        if self.positive_class >= self.class_names.len() {
            return field(
                "positive_class",
                format!(
                    "must index class_names (0..{}), got {}",
                    self.class_names.len(),
                    self.positive_class
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return field(
                "threshold",
                format!("must be a probability in [0, 1], got {}", self.threshold),
            );
        }
        let n = self.normalization;
        if !n.mean.is_finite() {
            return field(
                "normalization.mean",
                format!("must be finite, got {}", n.mean),
            );
        }
        if !(n.std.is_finite() && n.std > 0.0) {
            return field(
                "normalization.std",
                format!("must be positive and finite, got {}", n.std),
            );
        }
        if let Err(e) = self.preprocess.validate() {
            return field("preprocess.image_size", e.to_string());
        }
        if m.image_size != self.preprocess.image_size {
            return field(
                "model.image_size",
                format!(
                    "{} differs from preprocess.image_size {}",
                    m.image_size, self.preprocess.image_size
                ),
            );
        }
        if m.in_channels != 1 {
            return field(
                "model.in_channels",
                format!("must be 1 (gray images), got {}", m.in_channels),
            );
        }
        let bound = m.backbone().size_bound(m.in_channels);
        if bound.stages > Self::MAX_STAGES || bound.max_width > Self::MAX_WIDTH {
            return field(
                "model.arch",
                format!(
                    "at most {} stages of at most {} channels, got {} stage(s) up to {} channels",
                    Self::MAX_STAGES,
                    Self::MAX_WIDTH,
                    bound.stages,
                    bound.max_width
                ),
            );
        }
        if m.members > Self::MAX_MEMBERS {
            return field(
                "model.members",
                format!("at most {}, got {}", Self::MAX_MEMBERS, m.members),
            );
        }
        if bound.max_blocks_per_stage > Self::MAX_BLOCKS_PER_STAGE {
            return field(
                "model.arch",
                format!(
                    "at most {} blocks per stage, got {}",
                    Self::MAX_BLOCKS_PER_STAGE,
                    bound.max_blocks_per_stage
                ),
            );
        }
        if m.image_size > Self::MAX_MODEL_IMAGE_SIZE {
            return field(
                "model.image_size",
                format!(
                    "at most {} px, got {}",
                    Self::MAX_MODEL_IMAGE_SIZE,
                    m.image_size
                ),
            );
        }
        let weights = bound.conv_weights * m.members.max(1) as u128;
        if weights > Self::MAX_CONV_WEIGHTS {
            return field(
                "model.arch",
                format!(
                    "{} with {} member(s) would need up to {weights} convolution weights (at most {})",
                    m.backbone().describe(),
                    m.members,
                    Self::MAX_CONV_WEIGHTS
                ),
            );
        }
        if let Err(e) = m.validate() {
            return field("model", e.to_string());
        }
        Ok(())
    }
}

/// A network with its metadata, ready to predict.
///
/// ```
/// use fracture_nn::{Classifier, ClassifierMeta, ModelConfig};
/// let meta = ClassifierMeta::new(ModelConfig::phantom(32), fracture_nn::data::Normalization { mean: 0.5, std: 0.25 });
/// let mut clf = Classifier::new(meta, 7)?;
/// let p = clf.predict_batch(&vec![0.0; 2 * 32 * 32], 2)?;
/// assert_eq!(p.len(), 2);
/// assert!(p.iter().all(|&v| (0.0..=1.0).contains(&v)));
/// let dir = tempfile::tempdir()?;
/// clf.save(&dir.path().join("m.safetensors"))?;
/// let mut back = Classifier::load(&dir.path().join("m.safetensors"))?;
/// assert_eq!(back.predict_batch(&vec![0.0; 2 * 32 * 32], 2)?, p);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Classifier {
    /// The network.
    pub net: Sequential,
    /// Its metadata.
    pub meta: ClassifierMeta,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// A freshly initialised network (weights from `seed`) with `meta`.
    pub fn new(meta: ClassifierMeta, seed: u64) -> Result<Self> {
        let net = meta.model.build(seed)?;
        Ok(Classifier { net, meta })
    }

    /// Wraps an existing network.
    pub fn from_parts(net: Sequential, meta: ClassifierMeta) -> Self {
        Classifier { net, meta }
    }

    /// Saves weights and metadata atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        checkpoint::save_model(path, &self.net, &meta_entries(&self.meta))?;
        Ok(())
    }

    /// Reads only the metadata of a model file.
    pub fn read_meta(path: &Path) -> Result<ClassifierMeta> {
        let meta = checkpoint::read_metadata(path)?;
        parse_meta(path, &meta)
    }

    /// Loads a model file written by [`Classifier::save`]: rebuilds the architecture from its
    /// metadata, then loads and checks every tensor.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = Self::read_meta(path)?;
        let mut net = meta.model.build(0).map_err(|e| Error::ModelFile {
            path: path.to_path_buf(),
            reason: format!("its architecture cannot be built: {e}"),
        })?;
        checkpoint::load_model(path, &mut net)?;
        check_finite(path, &net)?;
        Ok(Classifier { net, meta })
    }

    /// Input side in pixels.
    pub fn image_size(&self) -> usize {
        self.meta.model.image_size
    }

    /// P(positive class) for a batch of `n` standardised images laid out NCHW (C = 1) in
    /// `pixels`; the network runs in eval mode.
    pub fn predict_batch(&mut self, pixels: &[f32], n: usize) -> Result<Vec<f64>> {
        let s = self.image_size();
        let c = self.meta.model.in_channels;
        let x = Tensor4::from_vec([n, c, s, s], pixels.to_vec())?;
        self.predict_tensor(&x)
    }

    /// P(positive class) for an NCHW batch already in a tensor, under the model's
    /// test-time augmentation ([`ClassifierMeta::tta`]).
    pub fn predict_tensor(&mut self, x: &Tensor4) -> Result<Vec<f64>> {
        let probs = predict_probs(&mut self.net, x, self.meta.tta)?;
        let [n, k, _, _] = probs.shape();
        let pos = self.meta.positive_class;
        Ok((0..n)
            .map(|i| probs.as_slice()[i * k + pos] as f64)
            .collect())
    }

    /// The typicality of each image of the last prediction (the image as given, also under
    /// flip averaging), if the model holds a bank ([`crate::typicality`]).
    pub fn last_typicality(&self) -> Option<Vec<crate::typicality::Typicality>> {
        let cfg = self.meta.model.typicality.as_ref()?;
        let scores = crate::typicality::last_scores(&self.net)?;
        Some(scores.into_iter().map(|s| cfg.judge(s)).collect())
    }

    /// Decodes, preprocesses (as in training) and classifies one image file.
    pub fn predict_file(&mut self, path: &Path) -> Result<f64> {
        let x =
            fracture_data::preprocess_file(path, &self.meta.preprocess, &self.meta.normalization)?;
        Ok(self.predict_batch(&x, 1)?[0])
    }

    /// The label for a probability at the classifier's threshold (or `threshold`).
    pub fn label(&self, p_positive: f64, threshold: Option<f64>) -> &str {
        let t = threshold.unwrap_or(self.meta.threshold);
        let pos = self.meta.positive_class;
        let idx = if p_positive >= t { pos } else { 1 - pos.min(1) };
        self.meta
            .class_names
            .get(idx)
            .map(String::as_str)
            .unwrap_or("?")
    }
}

/// Refuses weights holding NaN or infinity: they would only surface later as a NaN logit.
fn check_finite(path: &Path, net: &Sequential) -> Result<()> {
    use fracture_layers::Layer;
    let mut bad: Option<String> = None;
    net.visit_params_ref("", &mut |name, p| {
        if bad.is_none() && p.value.as_slice().iter().any(|v| !v.is_finite()) {
            bad = Some(name.to_string());
        }
    });
    net.visit_buffers_ref("", &mut |name, b| {
        if bad.is_none() && b.value.as_slice().iter().any(|v| !v.is_finite()) {
            bad = Some(name.to_string());
        }
    });
    match bad {
        Some(name) => Err(Error::ModelFile {
            path: path.to_path_buf(),
            reason: format!(
                "tensor {name:?} holds NaN or infinite values (a damaged file, or weights of a diverged run); retrain or use another model file"
            ),
        }),
        None => Ok(()),
    }
}

/// The safetensors metadata entries describing a classifier.
pub(crate) fn meta_entries(meta: &ClassifierMeta) -> checkpoint::Metadata {
    let json = serde_json::to_string(meta).expect("ClassifierMeta serialises");
    [(META_KEY.to_string(), json)].into_iter().collect()
}

fn parse_meta(path: &Path, meta: &checkpoint::Metadata) -> Result<ClassifierMeta> {
    let json = meta.get(META_KEY).ok_or_else(|| Error::ModelFile {
        path: path.to_path_buf(),
        reason: format!("not a fracture-nn classifier: its metadata has no {META_KEY:?} entry"),
    })?;
    let mut parsed: ClassifierMeta = serde_json::from_str(json).map_err(|e| Error::ModelFile {
        path: path.to_path_buf(),
        reason: format!("its {META_KEY:?} metadata is not valid: {e}"),
    })?;
    parsed.validate().map_err(|e| Error::ModelFile {
        path: path.to_path_buf(),
        reason: format!(
            "invalid model file: {}",
            e.to_string().trim_start_matches("invalid configuration: ")
        ),
    })?;
    // Decode limits from a file can only tighten the built-in ones (a crafted file must not
    // switch off the decompression-bomb protection).
    parsed.preprocess.limits =
        fracture_data::DecodeLimits::default().tightened_by(&parsed.preprocess.limits);
    Ok(parsed)
}
