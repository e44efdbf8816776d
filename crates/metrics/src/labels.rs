//! Class conventions and input checks shared by every metric.
//!
//! The product's class indices follow the sorted folder names: index [`FRACTURED`] = 0,
//! index [`NOT_FRACTURED`] = 1. Metrics, however, treat *fractured* as the positive class, so a
//! trainer holding class indices converts them once with [`positives_from_classes`].

use crate::error::{MetricsError, Result};

/// Class index of "fractured" (the positive class of every binary metric).
pub const FRACTURED: usize = 0;
/// Class index of "not_fractured" (the negative class).
pub const NOT_FRACTURED: usize = 1;
/// Class names in class-index order (the sorted dataset folder names).
pub const CLASS_NAMES: [&str; 2] = ["fractured", "not_fractured"];

/// Turns class indices (0 = fractured, 1 = not_fractured) into positive flags (`true` =
/// fractured).
///
/// # Errors
/// [`MetricsError::ClassOutOfRange`] if an index is neither 0 nor 1.
///
/// # Example
/// ```
/// use fracture_metrics::positives_from_classes;
/// assert_eq!(positives_from_classes(&[0, 1, 1, 0])?, vec![true, false, false, true]);
/// assert!(positives_from_classes(&[0, 2]).is_err());
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
pub fn positives_from_classes(classes: &[usize]) -> Result<Vec<bool>> {
    check_classes("positives_from_classes", classes, CLASS_NAMES.len())?;
    Ok(classes.iter().map(|&c| c == FRACTURED).collect())
}

/// Fails with [`MetricsError::ClassOutOfRange`] at the first index `>= n_classes`.
pub(crate) fn check_classes(what: &'static str, classes: &[usize], n_classes: usize) -> Result<()> {
    match classes.iter().position(|&c| c >= n_classes) {
        Some(index) => Err(MetricsError::ClassOutOfRange {
            what,
            index,
            value: classes[index],
            n_classes,
        }),
        None => Ok(()),
    }
}

/// Checks labels against scores: same length, not empty, every score finite.
pub(crate) fn check_scored(what: &'static str, labels: &[bool], scores: &[f64]) -> Result<()> {
    check_lengths(what, labels.len(), scores.len(), "scores")?;
    match scores.iter().position(|s| !s.is_finite()) {
        Some(index) => Err(MetricsError::NonFiniteScore {
            what,
            index,
            value: scores[index],
        }),
        None => Ok(()),
    }
}

/// Checks that two per-sample slices have one common, non-zero length.
pub(crate) fn check_lengths(
    what: &'static str,
    labels: usize,
    other: usize,
    other_name: &'static str,
) -> Result<()> {
    if labels != other {
        return Err(MetricsError::LengthMismatch {
            what,
            labels,
            other,
            other_name,
        });
    }
    if labels == 0 {
        return Err(MetricsError::Empty { what });
    }
    Ok(())
}

/// Fails with [`MetricsError::OneClass`] unless both classes occur.
pub(crate) fn require_both_classes(
    what: &'static str,
    positives: u64,
    negatives: u64,
) -> Result<()> {
    if positives == 0 || negatives == 0 {
        return Err(MetricsError::OneClass {
            what,
            positives: positives as usize,
            negatives: negatives as usize,
            expected: "at least one sample of each class",
        });
    }
    Ok(())
}

/// Fails with [`MetricsError::OneClass`] unless some label is positive.
pub(crate) fn require_positive(what: &'static str, positives: u64, negatives: u64) -> Result<()> {
    if positives == 0 {
        return Err(MetricsError::OneClass {
            what,
            positives: 0,
            negatives: negatives as usize,
            expected: "at least one fractured (positive) sample",
        });
    }
    Ok(())
}

/// Fails with [`MetricsError::InvalidArgument`] if `threshold` is NaN (infinities are allowed:
/// `+inf` predicts nothing positive, `-inf` everything).
pub(crate) fn check_threshold(what: &'static str, threshold: f64) -> Result<()> {
    if threshold.is_nan() {
        return Err(MetricsError::InvalidArgument {
            what,
            name: "threshold",
            value: threshold.to_string(),
            expected: "a number (not NaN)",
        });
    }
    Ok(())
}
