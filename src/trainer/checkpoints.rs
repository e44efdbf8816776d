//! The run's files between epochs: `last.safetensors` + `last.optim.safetensors` (weights,
//! optimizer moments and the [`RunState`], written atomically, optimizer first) that `resume`
//! continues from, with the checks that refuse a checkpoint of other settings, and the
//! per-epoch `metrics.csv` and `curves.png`.

use std::path::PathBuf;

use fracture_data::Normalization;
use fracture_layers::optim::Optimizer;
use fracture_layers::{checkpoint, Sequential};
use serde::{Deserialize, Serialize};

use crate::curves::{plot_training_curves, EpochPoint};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::trainer::config::TrainConfig;
use crate::trainer::report::EpochRecord;
use crate::Trainer;

/// The state saved in `last.safetensors` besides the weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunState {
    pub(crate) epochs_done: usize,
    pub(crate) best_auc: Option<f64>,
    pub(crate) best_epoch: usize,
    pub(crate) history: Vec<EpochRecord>,
    pub(crate) config: TrainConfig,
    pub(crate) model: ModelConfig,
    pub(crate) normalization: Normalization,
    pub(crate) data: String,
    pub(crate) train_seconds: f64,
    /// Optimizer steps averaged into the weight EMA (0 without one).
    #[serde(default)]
    pub(crate) ema_updates: u64,
}

pub(crate) const STATE_KEY: &str = "fracture_nn_run";

impl Trainer {
    pub(crate) fn last_path(&self) -> PathBuf {
        self.out_dir.join("last.safetensors")
    }

    pub(crate) fn last_ema_path(&self) -> PathBuf {
        self.out_dir.join("last.ema.safetensors")
    }

    pub(crate) fn last_optim_path(&self) -> PathBuf {
        self.out_dir.join("last.optim.safetensors")
    }

    pub(crate) fn save_last(
        &self,
        net: &Sequential,
        opt: &dyn Optimizer,
        state: &RunState,
    ) -> Result<()> {
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

    pub(crate) fn load_last(
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

    pub(crate) fn write_history_files(&self, history: &[EpochRecord]) -> Result<()> {
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

/// The top-level fields that differ between two serialisable settings, as `name: was -> now`.
fn changed_fields<T: Serialize>(was: &T, now: &T) -> String {
    let (Ok(a), Ok(b)) = (serde_json::to_value(was), serde_json::to_value(now)) else {
        return "unknown setting".into();
    };
    let mut diffs = Vec::new();
    diff_values("", &a, Some(&b), &mut diffs);
    if diffs.is_empty() {
        "unknown setting".into()
    } else {
        diffs.join(", ")
    }
}

/// Appends `path: was -> now` for every leaf that differs, descending into objects and into
/// arrays of equal length, so that a change deep in the architecture reads as
/// `arch.stages.1.width: 16 -> 8`.
fn diff_values(
    path: &str,
    was: &serde_json::Value,
    now: Option<&serde_json::Value>,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let join = |k: &dyn std::fmt::Display| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (was, now) {
        (Value::Object(a), Some(Value::Object(b))) => {
            for (k, v) in a {
                diff_values(&join(k), v, b.get(k), out);
            }
            for (k, v) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                out.push(format!("{}: (absent) -> {v}", join(k)));
            }
        }
        (Value::Array(a), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&join(&i), x, Some(y), out);
            }
        }
        (a, Some(b)) if a == b => {}
        (a, b) => out.push(format!(
            "{}: {a} -> {}",
            if path.is_empty() { "value" } else { path },
            b.map_or("(absent)".to_string(), |b| b.to_string())
        )),
    }
}
