//! What a run reports: one [`EpochRecord`] per epoch, the [`RunReport`] written as
//! `report.json` (shared by single runs and ensembles), the [`TrainOutcome`] returned to the
//! caller, and the model file's [`Provenance`].

use std::path::{Path, PathBuf};

use fracture_layers::checkpoint;
use fracture_metrics::{BinaryReport, OperatingPoint};
use serde::{Deserialize, Serialize};

use crate::classifier::{Classifier, Provenance};
use crate::error::Result;
use crate::model::ModelConfig;
use crate::trainer::calibrate::Calibration;
use crate::trainer::config::TrainConfig;
use crate::tta::Tta;

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

/// The provenance a model file carries: the data's description (a name and a hash of its
/// file list, never an absolute path), the seed, the epochs run and the best one with its
/// validation ROC-AUC, and the time of writing.
pub(crate) fn provenance(
    data: &str,
    seed: u64,
    epochs: usize,
    best_epoch: usize,
    val_auc: Option<f64>,
) -> Provenance {
    Provenance {
        data: data.to_string(),
        seed,
        epochs,
        best_epoch,
        val_auc,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ..Provenance::default()
    }
}

/// The parts of a [`RunReport`] that differ between a single run and an ensemble.
pub(crate) struct ReportParts {
    pub(crate) model: ModelConfig,
    pub(crate) data: String,
    pub(crate) sizes: SplitSizes,
    pub(crate) epochs_run: usize,
    pub(crate) best_epoch: usize,
    pub(crate) train_seconds: f64,
    pub(crate) history: Vec<EpochRecord>,
    pub(crate) members: Vec<MemberSummary>,
}

/// Assembles the run's report from its parts and the calibration, writes it atomically as
/// `report.json` into `out_dir`, and returns the outcome.
pub(crate) fn finish_report(
    config: &TrainConfig,
    clf: Classifier,
    cal: Calibration,
    parts: ReportParts,
    out_dir: &Path,
) -> Result<TrainOutcome> {
    let report = RunReport {
        config: config.clone(),
        model: parts.model,
        num_params: fracture_layers::Layer::num_params(&clf.net),
        data: parts.data,
        sizes: parts.sizes,
        epochs_run: parts.epochs_run,
        best_epoch: parts.best_epoch,
        train_seconds: parts.train_seconds,
        operating_point: cal.operating_point,
        youden: cal.youden,
        val: cal.val,
        test: cal.test,
        tta: cal.tta,
        tta_val_auc: cal.tta_val_auc,
        history: parts.history.clone(),
        members: parts.members,
    };
    let json = serde_json::to_string_pretty(&report).expect("report serialises");
    checkpoint::write_atomic(&out_dir.join("report.json"), json.as_bytes())?;
    Ok(TrainOutcome {
        classifier: clf,
        history: parts.history,
        best_epoch: parts.best_epoch,
        report,
        out_dir: out_dir.to_path_buf(),
    })
}
