//! The crate's error type: every failure names the layer, tensor, file or shape at fault and what
//! was expected.

use std::path::PathBuf;

use fracture_tensor::TensorError;

/// Crate-wide result alias.
pub type Result<T> = std::result::Result<T, LayersError>;

/// Everything that can go wrong in `fracture-layers`.
///
/// ```
/// use fracture_layers::LayersError;
/// let e = LayersError::NoForwardCache { layer: "Conv2d" };
/// assert!(e.to_string().contains("Conv2d"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum LayersError {
    /// A kernel of `fracture-tensor` rejected its arguments.
    #[error(transparent)]
    Tensor(#[from] TensorError),

    /// A layer got an input (or upstream gradient) of the wrong shape.
    #[error("{layer}: expected {expected}, got shape {got:?}")]
    Shape {
        /// Layer kind, e.g. `"Linear"`.
        layer: &'static str,
        /// What the layer expected, in words.
        expected: String,
        /// The shape it got.
        got: Vec<usize>,
    },

    /// `backward` ran without a forward pass that cached its inputs.
    #[error(
        "{layer}: backward called without a cached forward pass \
         (run forward in Mode::Train or Mode::EvalWithGrad first; each forward serves one backward)"
    )]
    NoForwardCache {
        /// Layer kind.
        layer: &'static str,
    },

    /// A configuration value is out of range.
    #[error("{layer} config: {reason}")]
    Config {
        /// Layer, loss, optimizer or schedule the config belongs to.
        layer: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// Bad arguments to the loss (targets, class weights, logits).
    #[error("cross-entropy: {0}")]
    Loss(String),

    /// A `Sequential` was given an empty, dotted or duplicate layer name.
    #[error("Sequential: invalid layer name {name:?}: {reason}")]
    LayerName {
        /// The offending name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A parameter's value, gradient and optimizer state disagree in size.
    #[error("parameter {name}: {reason}")]
    Param {
        /// State-dict name of the parameter.
        name: String,
        /// What is inconsistent.
        reason: String,
    },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint file is not a readable safetensors file of the expected kind.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file (or `<bytes>` for in-memory data).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A tensor the model needs is absent from the checkpoint.
    #[error("checkpoint {path}: missing tensor {name:?} (expected shape {expected:?})")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// Shape the model needs.
        expected: Vec<usize>,
    },

    /// The checkpoint holds a tensor the model does not have.
    #[error(
        "checkpoint {path}: unexpected tensor {name:?} (not a parameter or buffer of this model)"
    )]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        name: String,
    },

    /// A PyTorch checkpoint could not be read (see [`crate::pth`]).
    #[error(transparent)]
    Pth(#[from] crate::pth::PthError),

    /// A tensor in the checkpoint has the wrong shape or dtype.
    #[error("checkpoint {path}: tensor {name:?} is {got}, expected F32 {expected:?}")]
    TensorMismatch {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// Shape the model needs.
        expected: Vec<usize>,
        /// What the file holds (dtype and shape).
        got: String,
    },
}

impl LayersError {
    /// Shorthand for [`LayersError::Shape`].
    pub(crate) fn shape(layer: &'static str, expected: impl Into<String>, got: &[usize]) -> Self {
        LayersError::Shape {
            layer,
            expected: expected.into(),
            got: got.to_vec(),
        }
    }

    /// Shorthand for [`LayersError::Config`].
    pub(crate) fn config(layer: &'static str, reason: impl Into<String>) -> Self {
        LayersError::Config {
            layer,
            reason: reason.into(),
        }
    }
}
