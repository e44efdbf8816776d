//! The crate's error type: every way bad input to a metric is refused.
//!
//! Metrics never panic on bad input; they return one of these variants, whose message names the
//! function (`what`) that refused the input, the offending index or value, and what was expected.

/// Everything that can go wrong when computing a metric.
///
/// # Example
/// ```
/// use fracture_metrics::{roc_auc, MetricsError};
/// let err = roc_auc(&[true, true], &[0.9, 0.4]).unwrap_err();
/// assert!(matches!(err, MetricsError::OneClass { positives: 2, negatives: 0, .. }));
/// assert_eq!(
///     err.to_string(),
///     "roc_auc: undefined with 2 fractured (positive) and 0 not_fractured (negative) samples; \
///      expected at least one sample of each class"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// No samples were given.
    #[error("{what}: empty input; expected at least one sample")]
    Empty {
        /// The function that refused the input.
        what: &'static str,
    },

    /// Labels and scores (or predictions) differ in length.
    #[error("{what}: {labels} labels but {other} {other_name}; expected one per sample")]
    LengthMismatch {
        /// The function that refused the input.
        what: &'static str,
        /// Number of labels given.
        labels: usize,
        /// Number of scores or predictions given.
        other: usize,
        /// What the second slice holds ("scores" or "predictions").
        other_name: &'static str,
    },

    /// A score is NaN or infinite.
    #[error("{what}: score at index {index} is {value}; expected a finite number")]
    NonFiniteScore {
        /// The function that refused the input.
        what: &'static str,
        /// Position of the first offending score.
        index: usize,
        /// The offending value.
        value: f64,
    },

    /// The metric needs a class that the labels lack (e.g. ROC-AUC with one class only).
    #[error(
        "{what}: undefined with {positives} fractured (positive) and {negatives} not_fractured \
         (negative) samples; expected {expected}"
    )]
    OneClass {
        /// The function that refused the input.
        what: &'static str,
        /// Number of positive (fractured) labels.
        positives: usize,
        /// Number of negative (not_fractured) labels.
        negatives: usize,
        /// Which classes the metric needs.
        expected: &'static str,
    },

    /// A class index is not below the number of classes.
    #[error(
        "{what}: class index {value} at position {index}; expected an index below {n_classes}"
    )]
    ClassOutOfRange {
        /// The function that refused the input.
        what: &'static str,
        /// Position of the first offending index.
        index: usize,
        /// The offending class index.
        value: usize,
        /// Number of classes.
        n_classes: usize,
    },

    /// A scalar argument (threshold, target sensitivity, resample count, ...) is out of range.
    #[error("{what}: {name} = {value}; expected {expected}")]
    InvalidArgument {
        /// The function that refused the input.
        what: &'static str,
        /// Name of the argument.
        name: &'static str,
        /// The offending value, as text.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },

    /// Every bootstrap resample lacked a class the metric needs.
    #[error(
        "{what}: none of the {n_resamples} bootstrap resamples held the classes needed for \
         {metric}; expected more samples or more resamples"
    )]
    NoValidResample {
        /// The function that refused the input.
        what: &'static str,
        /// The metric that could not be estimated.
        metric: &'static str,
        /// How many resamples were drawn.
        n_resamples: usize,
    },
}

/// The crate-wide result type.
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;
