//! The crate's one error type, [`TensorError`], and the crate-wide [`Result`] alias.
//!
//! Every variant names the operation at fault and says what was expected and what was given,
//! so that a message such as `conv2d_forward: w has 4 input channels but x has 3` is enough to
//! find the bug without a debugger.

/// Result alias used by every fallible function of this crate.
pub type Result<T> = std::result::Result<T, TensorError>;

/// What can go wrong in a tensor operation. Bad input always returns one of these; it never panics.
///
/// ```
/// use fracture_tensor::{Tensor4, TensorError};
/// let err = Tensor4::from_vec([1, 1, 2, 2], vec![0.0; 3]).unwrap_err();
/// assert!(matches!(err, TensorError::LengthMismatch { .. }));
/// assert!(err.to_string().contains("expected 4"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// Two tensors (or a tensor and a parameter) disagree on a dimension.
    #[error("{op}: shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Operation that detected the problem.
        op: &'static str,
        /// Which tensor or dimension is wrong.
        what: String,
        /// What the operation needed.
        expected: String,
        /// What it was given.
        got: String,
    },
    /// A buffer holds the wrong number of elements.
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// Operation that detected the problem.
        op: &'static str,
        /// Which buffer is wrong.
        what: String,
        /// Number of elements needed.
        expected: usize,
        /// Number of elements given.
        got: usize,
    },
    /// The operation would produce (or was given) a tensor with a zero-sized dimension.
    #[error("{op}: empty output for input {input:?}: {detail}")]
    EmptyOutput {
        /// Operation that detected the problem.
        op: &'static str,
        /// Shape of the input tensor.
        input: [usize; 4],
        /// Why the output is empty.
        detail: String,
    },
    /// A parameter is outside its valid range (zero stride, zero kernel, aliased GEMM output, ...).
    #[error("{op}: invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// Operation that detected the problem.
        op: &'static str,
        /// Name of the parameter.
        name: &'static str,
        /// The value given.
        value: String,
        /// What the value must satisfy.
        reason: String,
    },
    /// A slice passed to [`sgemm`](crate::sgemm) is too short for the given shape and strides.
    #[error(
        "{op}: operand {operand} needs {needed} elements for its shape and strides, got {got}"
    )]
    SliceTooShort {
        /// Operation that detected the problem.
        op: &'static str,
        /// Which operand (`a`, `b` or `c`).
        operand: &'static str,
        /// Minimum length required.
        needed: usize,
        /// Length given.
        got: usize,
    },
    /// A max-pool argmax index points outside its input plane.
    #[error(
        "{op}: argmax[{position}] = {index} is outside the input plane of {plane_len} elements"
    )]
    IndexOutOfRange {
        /// Operation that detected the problem.
        op: &'static str,
        /// Position in the argmax slice.
        position: usize,
        /// The offending index.
        index: usize,
        /// Number of elements in one (n, c) plane of the input.
        plane_len: usize,
    },
}
