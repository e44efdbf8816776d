//! [`PthError`]: everything that can go wrong reading a PyTorch checkpoint. Every variant names
//! the file (`<bytes>` for in-memory data; `outer.whl (entry pkg/model.pth)` for a checkpoint
//! found inside a zip) and, where it applies, the archive entry, pickle offset, storage or tensor.

use std::path::PathBuf;

/// An error from [`crate::pth`]. Nothing in a refused file has been run.
///
/// ```
/// use fracture_layers::pth::{load_bytes, PthError};
/// let err = load_bytes(b"").unwrap_err();
/// assert!(matches!(err, PthError::NotCheckpoint { .. }));
/// assert!(err.to_string().contains("<bytes>"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PthError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The file (or an entry of a zip archive) is larger than this reader accepts.
    #[error("{file}: {what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        file: String,
        /// What is too large (the file, or a named zip entry).
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// The bytes are not a PyTorch checkpoint in any supported format.
    #[error("{file}: not a PyTorch checkpoint: {reason}")]
    NotCheckpoint {
        /// The file.
        file: String,
        /// What was found instead.
        reason: String,
    },

    /// The zip archive is damaged, or lacks an entry the format needs.
    #[error("{file}: zip archive: {reason}")]
    Zip {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },

    /// A pickle stream is malformed or uses something this reader does not support.
    #[error("{file}: pickle {entry}, opcode at byte {offset}: {reason}")]
    Pickle {
        /// The file.
        file: String,
        /// Which pickle (zip entry name, or the part of a legacy file).
        entry: String,
        /// Byte offset of the failing opcode within that pickle's stream.
        offset: usize,
        /// What is wrong.
        reason: String,
    },

    /// The pickle names a global (class or function) that is not on the allow-list. Python's
    /// unpickler would import and possibly call it; this reader refuses the file instead.
    #[error(
        "{file}: pickle {entry} refers to the global {module}.{name}, which is not on the \
         allow-list of tensor-rebuilding functions (nothing was run; only state dicts of tensors \
         can be read, not pickled modules or arbitrary objects)"
    )]
    ForbiddenGlobal {
        /// The file.
        file: String,
        /// Which pickle.
        entry: String,
        /// Module of the global, e.g. `posix`.
        module: String,
        /// Name of the global, e.g. `system`.
        name: String,
    },

    /// A tensor storage is missing, truncated or of an unsupported type.
    #[error("{file}: storage {key:?}: {reason}")]
    Storage {
        /// The file.
        file: String,
        /// The storage key (zip: the name under `data/`; legacy: the root key).
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// A tensor's view (shape, strides, offset) does not fit its storage, or it is too large.
    #[error("{file}: tensor {name:?}: {reason}")]
    Tensor {
        /// The file.
        file: String,
        /// The state-dict name.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// The checkpoint was read, but no state dict of tensors could be found in it.
    #[error("{file}: no state dict: {reason}")]
    NotStateDict {
        /// The file.
        file: String,
        /// What the checkpoint holds instead.
        reason: String,
    },

    /// The checkpoint was written on a big-endian machine; only little-endian is supported.
    /// [`super::load_selected`]'s `pick` function refused the tensors (names or shapes that
    /// do not fit), before any tensor data was read.
    #[error("{file}: {reason}")]
    Refused {
        /// The file.
        file: String,
        /// What `pick` said.
        reason: String,
    },

    #[error("{file}: written on a big-endian machine ({detail}); only little-endian checkpoints are supported")]
    BigEndian {
        /// The file.
        file: String,
        /// Where the byte order was read from.
        detail: String,
    },
}

impl PthError {
    /// Fills in the file name: sets it where empty, or prefixes it as the outer file when the
    /// error came from a checkpoint nested inside a zip.
    pub(crate) fn in_file(mut self, outer: &str) -> Self {
        let slot = match &mut self {
            PthError::Io { .. } => return self,
            PthError::TooLarge { file, .. }
            | PthError::NotCheckpoint { file, .. }
            | PthError::Zip { file, .. }
            | PthError::Pickle { file, .. }
            | PthError::ForbiddenGlobal { file, .. }
            | PthError::Storage { file, .. }
            | PthError::Tensor { file, .. }
            | PthError::NotStateDict { file, .. }
            | PthError::Refused { file, .. }
            | PthError::BigEndian { file, .. } => file,
        };
        *slot = if slot.is_empty() {
            outer.to_string()
        } else {
            format!("{outer} (entry {slot})")
        };
        self
    }
}
