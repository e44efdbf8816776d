//! The error type of the `fracture-nn` facade: everything the model, trainer and prediction
//! code can fail with, each naming the file or setting at fault.

use std::path::PathBuf;

/// Errors from the model, trainer, checkpoints and prediction.
///
/// ```
/// use fracture_nn::Error;
/// let e = Error::Config("epochs must be at least 1".into());
/// assert_eq!(e.to_string(), "invalid configuration: epochs must be at least 1");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work (zero epochs, an input size too small for the network...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A training setting out of its range ([`crate::TrainConfig::validate`]).
    #[error("invalid configuration: {setting} = {value}: {rule}")]
    Setting {
        /// The field of [`crate::TrainConfig`].
        setting: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        rule: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A model file that is not a fracture-nn classifier, or whose metadata is unreadable.
    #[error("{}: {reason}", path.display())]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing a plot failed.
    #[error("cannot draw {}: {reason}", path.display())]
    Plot {
        /// The PNG being written.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The loss became NaN or infinite; the checkpoint of the last finished epoch, if any, is
    /// kept.
    #[error("training diverged at epoch {epoch}, batch {batch}: the loss is {loss} ({}); lower the learning rate (--lr) or check the data", kept_note(*epoch))]
    NonFiniteLoss {
        /// Epoch (from 1).
        epoch: usize,
        /// Batch within the epoch (from 1).
        batch: usize,
        /// The offending value.
        loss: f32,
    },
    /// Resuming is impossible (no state to resume from, or a state from another run).
    #[error("cannot resume from {}: {reason}", path.display())]
    Resume {
        /// The state file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A results file (`predict --out`) that cannot be used as asked: it holds lines and
    /// neither resuming nor overwriting was asked for, a line is not a result, or another run
    /// holds it.
    #[error("{}: {reason}", path.display())]
    ResultsFile {
        /// The results file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A run folder that already holds a run, claimed without resuming or overwriting it
    /// ([`crate::run_folder::RunFolder::claim`]).
    #[error("{} already holds a run ({}): pass --resume to continue it, --overwrite to replace it, or choose another --out", path.display(), files.join(", "))]
    RunExists {
        /// The run folder.
        path: PathBuf,
        /// Some of the files it holds (at most four named).
        files: Vec<String>,
    },
    /// A run folder whose lock another process holds: a run is training into it.
    #[error("{} is in use by another `fracture train` (it holds the lock file {}): wait for it to finish or choose another --out", path.display(), lock.display())]
    RunInUse {
        /// The run folder.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// A member of an ensemble failed to train (its run directory keeps what it finished).
    #[error("ensemble member {index} ({}): {source}", dir.display())]
    Member {
        /// The member's index.
        index: usize,
        /// Its run directory.
        dir: PathBuf,
        /// What went wrong.
        source: Box<Error>,
    },
    /// A tensor kernel failed (a shape error).
    #[error(transparent)]
    Tensor(#[from] fracture_tensor::TensorError),
    /// A layer, loss, optimizer or checkpoint failed.
    #[error(transparent)]
    Layers(#[from] fracture_layers::LayersError),
    /// Loading or preprocessing images failed.
    #[error(transparent)]
    Data(#[from] fracture_data::DataError),
    /// Computing metrics failed.
    #[error(transparent)]
    Metrics(#[from] fracture_metrics::MetricsError),
}

/// What survives a divergence in `epoch` (from 1): epochs before it saved a checkpoint.
fn kept_note(epoch: usize) -> &'static str {
    if epoch > 1 {
        "the checkpoint of the last finished epoch is kept"
    } else {
        "no epoch of this run finished, so it saved no checkpoint"
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
