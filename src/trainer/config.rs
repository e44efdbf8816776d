//! What defines a training run besides the data and the architecture: [`TrainConfig`], the
//! optimizer choice ([`OptimizerKind`]) and the loss's class weights ([`ClassWeights`]), with
//! the presets the CLI starts from ([`TrainConfig::phantoms`], [`TrainConfig::real_xrays`]).

use fracture_data::Augment;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tta::Tta;
#[cfg(doc)]
use crate::{ema::WeightEma, model::ModelConfig};

/// Which optimizer the trainer uses.
///
/// ```
/// use fracture_nn::OptimizerKind;
/// assert_eq!("adamw".parse::<OptimizerKind>().unwrap(), OptimizerKind::AdamW);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// SGD with momentum (Nesterov), weight decay added to the gradient.
    Sgd,
    /// AdamW with decoupled weight decay.
    AdamW,
}

impl std::str::FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adamw" | "adam" => Ok(OptimizerKind::AdamW),
            other => Err(Error::Config(format!(
                "unknown optimizer {other:?} (expected sgd or adamw)"
            ))),
        }
    }
}

/// How the loss weighs the classes.
///
/// ```
/// use fracture_nn::ClassWeights;
/// // 30 fractured, 90 not: inverse frequency, normalised to mean 1 over the samples.
/// assert_eq!(ClassWeights::Balanced.resolve(&[30, 90]).unwrap(), Some(vec![2.0, 2.0 / 3.0]));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeights {
    /// All classes weigh 1.
    None,
    /// `n / (k * n_c)` from the training split's balance (the default).
    Balanced,
    /// Given weights, one per class.
    Given(Vec<f32>),
}

impl ClassWeights {
    /// The weights for a training split with `counts` images per class.
    pub fn resolve(&self, counts: &[usize]) -> Result<Option<Vec<f32>>> {
        match self {
            ClassWeights::None => Ok(None),
            ClassWeights::Given(w) if w.len() == counts.len() => Ok(Some(w.clone())),
            ClassWeights::Given(w) => Err(Error::Config(format!(
                "{} class weights given for {} classes",
                w.len(),
                counts.len()
            ))),
            ClassWeights::Balanced => {
                let n: usize = counts.iter().sum();
                let k = counts.len() as f32;
                Ok(Some(
                    counts
                        .iter()
                        .map(|&c| {
                            if c == 0 {
                                0.0
                            } else {
                                n as f32 / (k * c as f32)
                            }
                        })
                        .collect(),
                ))
            }
        }
    }
}

/// Everything that defines a training run besides the data and the architecture.
///
/// ```
/// let cfg = fracture_nn::TrainConfig { epochs: 3, ..Default::default() };
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// SGD or AdamW.
    pub optimizer: OptimizerKind,
    /// Peak learning rate (cosine schedule with linear warm-up, per step).
    pub lr: f32,
    /// Final learning rate of the cosine schedule.
    pub min_lr: f32,
    /// Warm-up epochs (linear).
    pub warmup_epochs: usize,
    /// Weight decay (added to the gradient for SGD, decoupled for AdamW).
    pub weight_decay: f32,
    /// SGD momentum (Nesterov).
    pub momentum: f32,
    /// Class weights of the loss.
    pub class_weights: ClassWeights,
    /// Sample the classes evenly instead of weighting the loss.
    pub balanced_sampling: bool,
    /// Label smoothing of the loss.
    pub label_smoothing: f32,
    /// Clip the gradient's global norm to this value.
    pub grad_clip: Option<f32>,
    /// Training augmentation (`None`: none).
    pub augment: Option<Augment>,
    /// Stop when validation ROC-AUC has not improved for this many epochs.
    pub patience: Option<usize>,
    /// Sensitivity the operating threshold must reach on validation.
    pub target_sensitivity: f64,
    /// Seed of weights, batch order, augmentation and dropout.
    pub seed: u64,
    /// Show a progress bar and one summary line per epoch on stderr.
    pub verbose: bool,
    /// Test-time augmentation of the saved model: `None` scores validation with and without
    /// flip averaging at the end of the run and keeps the one with the higher ROC-AUC (ties keep
    /// [`Tta::Off`]); `Some` imposes one. The operating threshold is chosen under it.
    #[serde(default)]
    pub tta: Option<Tta>,
    /// Decay of an exponential moving average of the weights ([`WeightEma`]); when set, the
    /// averaged weights are the ones validated, chosen and saved. `None`: off.
    #[serde(default)]
    pub ema_decay: Option<f32>,
    /// Learning-rate multiplier of every parameter outside the classifier
    /// ([`ModelConfig::classifier_prefix`]): below 1 when fine-tuning pretrained layers beside
    /// a new classifier (PyTorch: two `param_groups`). 1 (the default, and what older runs read
    /// as): one rate for all.
    #[serde(default = "one_f32")]
    pub backbone_lr_scale: f32,
    /// Weight of the box-mask loss beside the classification loss, for a model with a mask
    /// head ([`ModelConfig::mask_head`]) trained with finding boxes
    /// ([`crate::FitInputs::with_boxes`]): the total loss is `CE + mask_weight * BCE(mask)`.
    /// 0 (the default, and what older runs read as): the mask head is not trained.
    #[serde(default)]
    pub mask_weight: f32,
    /// Weight of the positive (inside a box) cells in the mask loss: boxes cover a few cells of
    /// an image, so they are weighted up (default 20).
    #[serde(default = "twenty_f32")]
    pub mask_pos_weight: f32,
}

fn twenty_f32() -> f32 {
    20.0
}

fn one_f32() -> f32 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 20,
            batch_size: 32,
            optimizer: OptimizerKind::AdamW,
            lr: 2e-3,
            min_lr: 1e-5,
            warmup_epochs: 1,
            weight_decay: 1e-4,
            momentum: 0.9,
            class_weights: ClassWeights::Balanced,
            balanced_sampling: false,
            label_smoothing: 0.0,
            grad_clip: Some(5.0),
            augment: Some(Augment::default()),
            patience: None,
            target_sensitivity: 0.90,
            seed: 0,
            verbose: false,
            tta: None,
            ema_decay: None,
            backbone_lr_scale: 1.0,
            mask_weight: 0.0,
            mask_pos_weight: 20.0,
        }
    }
}

impl TrainConfig {
    /// The preset for the built-in synthetic phantoms (`fracture train` without `--data`):
    /// 20 epochs, the optimizer's default rate ([`TrainConfig::default_lr`]).
    ///
    /// ```
    /// let cfg = fracture_nn::TrainConfig::phantoms();
    /// assert_eq!((cfg.epochs, cfg.lr), (20, 2e-3));
    /// ```
    pub fn phantoms() -> Self {
        TrainConfig {
            epochs: 20,
            ..TrainConfig::default()
        }
    }

    /// The preset for a folder of real radiographs: 30 epochs (real X-rays are harder and
    /// fewer than phantoms), otherwise as [`TrainConfig::phantoms`].
    ///
    /// ```
    /// assert_eq!(fracture_nn::TrainConfig::real_xrays().epochs, 30);
    /// ```
    pub fn real_xrays() -> Self {
        TrainConfig {
            epochs: 30,
            ..TrainConfig::default()
        }
    }

    /// The peak learning rate a run uses with `optimizer` unless told otherwise: 0.05 for SGD,
    /// 2e-3 for AdamW.
    ///
    /// ```
    /// use fracture_nn::{OptimizerKind, TrainConfig};
    /// assert_eq!(TrainConfig::default_lr(OptimizerKind::Sgd), 0.05);
    /// ```
    pub fn default_lr(optimizer: OptimizerKind) -> f32 {
        match optimizer {
            OptimizerKind::Sgd => 0.05,
            OptimizerKind::AdamW => 2e-3,
        }
    }

    /// Checks the settings; the error names the first one out of range
    /// ([`Error::Setting`]: the field, its value and the rule).
    ///
    /// ```
    /// use fracture_nn::{Error, TrainConfig};
    /// let e = TrainConfig { lr: -1.0, ..TrainConfig::default() }.validate().unwrap_err();
    /// assert!(matches!(e, Error::Setting { setting: "lr", .. }));
    /// assert_eq!(e.to_string(), "invalid configuration: lr = -1: the learning rate must be positive and finite");
    /// ```
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &'static str, value: &dyn std::fmt::Display, rule: &'static str| {
            Err(Error::Setting {
                setting,
                value: value.to_string(),
                rule,
            })
        };
        if self.epochs == 0 {
            return bad("epochs", &self.epochs, "epochs must be at least 1");
        }
        if self.batch_size == 0 {
            return bad(
                "batch_size",
                &self.batch_size,
                "batch size must be at least 1",
            );
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return bad("ema_decay", &d, "the weight EMA decay must lie in [0, 1)");
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(
                "lr",
                &self.lr,
                "the learning rate must be positive and finite",
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                &self.weight_decay,
                "weight decay must be non-negative and finite",
            );
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(
                "label_smoothing",
                &self.label_smoothing,
                "label smoothing must lie in [0, 1)",
            );
        }
        if !(0.0..=1.0).contains(&self.target_sensitivity) {
            return bad(
                "target_sensitivity",
                &self.target_sensitivity,
                "target sensitivity must be in [0, 1]",
            );
        }
        if let Some(p) = self.patience.filter(|&p| p == 0) {
            return bad("patience", &p, "patience must be at least 1 epoch");
        }
        if !(self.backbone_lr_scale.is_finite() && self.backbone_lr_scale >= 0.0) {
            return bad(
                "backbone_lr_scale",
                &self.backbone_lr_scale,
                "the backbone learning-rate scale must be finite and >= 0",
            );
        }
        if !(self.mask_weight.is_finite() && self.mask_weight >= 0.0) {
            return bad(
                "mask_weight",
                &self.mask_weight,
                "the mask loss weight must be finite and >= 0",
            );
        }
        if !(self.mask_pos_weight.is_finite() && self.mask_pos_weight > 0.0) {
            return bad(
                "mask_pos_weight",
                &self.mask_pos_weight,
                "the mask loss's positive-cell weight must be finite and > 0",
            );
        }
        Ok(())
    }
}
