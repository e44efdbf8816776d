//! Operating points: choosing the threshold a deployed model will use.
//!
//! A threshold is chosen on one split (validation) with [`threshold_for_sensitivity`] or
//! [`youden_threshold`], then applied unchanged to another (test) with
//! [`OperatingPoint::apply`] (= [`Confusion::at_threshold`]), so the test figures stay honest.
//!
//! Candidate thresholds are those of the ROC curve: `+inf` (predict nothing fractured) and every
//! distinct score. A chosen threshold is therefore a score seen on the split it was chosen on.

use serde::Serialize;

use crate::confusion::Confusion;
use crate::error::{MetricsError, Result};
use crate::labels::require_both_classes;
use crate::ranking::RankedCounts;

/// A threshold and what it achieves on the split it was chosen on.
///
/// # Example
/// ```
/// use fracture_metrics::youden_threshold;
/// let val_labels = [true, true, false, false, false];
/// let val_scores = [0.8, 0.6, 0.7, 0.3, 0.1];
/// let op = youden_threshold(&val_labels, &val_scores)?;
/// assert_eq!((op.threshold, op.sensitivity), (0.6, 1.0));
/// assert!((op.specificity - 2.0 / 3.0).abs() < 1e-15);
/// // apply the same threshold to the test split
/// let test = op.apply(&[true, false], &[0.65, 0.2])?;
/// assert_eq!(test.sensitivity(), 1.0);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// Predict fractured when `score >= threshold`. May be `+inf` (nothing predicted fractured)
    /// when that is the best choice; JSON writes `+inf` as `null`.
    pub threshold: f64,
    /// Sensitivity reached on the split the threshold was chosen on.
    pub sensitivity: f64,
    /// Specificity reached on the split the threshold was chosen on.
    pub specificity: f64,
    /// The full confusion matrix at `threshold` on that split.
    pub confusion: Confusion,
}

impl OperatingPoint {
    /// Builds the point at candidate `k` of `ranked` (`None` = `+inf`).
    fn at(ranked: &RankedCounts, k: Option<usize>) -> Self {
        let (p, n) = (ranked.positives(), ranked.negatives());
        let (threshold, tp, fp) = match k {
            Some(k) => (ranked.thresholds[k], ranked.tps[k], ranked.fps[k]),
            None => (f64::INFINITY, 0, 0),
        };
        let confusion = Confusion {
            tp,
            fp,
            tn: n - fp,
            fn_: p - tp,
        };
        Self {
            threshold,
            sensitivity: confusion.sensitivity(),
            specificity: confusion.specificity(),
            confusion,
        }
    }

    /// Youden's J statistic at this point: `sensitivity + specificity - 1`.
    pub fn youden_j(&self) -> f64 {
        self.sensitivity + self.specificity - 1.0
    }

    /// The confusion matrix of this threshold on another split (e.g. test), with
    /// [`Confusion::at_threshold`].
    ///
    /// # Errors
    /// As [`Confusion::at_threshold`].
    pub fn apply(&self, labels_positive: &[bool], scores: &[f64]) -> Result<Confusion> {
        Confusion::at_threshold(labels_positive, scores, self.threshold)
    }
}

/// The threshold that reaches `target_sensitivity` with the best specificity.
///
/// Among candidate thresholds whose sensitivity is `>= target_sensitivity`, those with the
/// highest specificity are kept, and of these the one with the highest sensitivity (the lowest
/// such threshold). Some candidate always qualifies, since the lowest score catches every
/// fracture. A `target_sensitivity` of 0 may pick `+inf`.
///
/// # Errors
/// `target_sensitivity` outside `[0, 1]` or NaN; empty input, differing lengths, a non-finite
/// score, or one class only.
///
/// # Example
/// ```
/// use fracture_metrics::threshold_for_sensitivity;
/// let labels = [true, true, true, true, false, false, false, false];
/// let scores = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1];
/// let op = threshold_for_sensitivity(&labels, &scores, 0.75)?;
/// assert_eq!((op.threshold, op.sensitivity, op.specificity), (0.6, 0.75, 0.75));
/// assert!(threshold_for_sensitivity(&labels, &scores, 1.5).is_err());
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
pub fn threshold_for_sensitivity(
    labels_positive: &[bool],
    scores: &[f64],
    target_sensitivity: f64,
) -> Result<OperatingPoint> {
    const WHAT: &str = "threshold_for_sensitivity";
    if !(0.0..=1.0).contains(&target_sensitivity) {
        return Err(MetricsError::InvalidArgument {
            what: WHAT,
            name: "target_sensitivity",
            value: target_sensitivity.to_string(),
            expected: "a number in [0, 1]",
        });
    }
    let ranked = RankedCounts::new(WHAT, labels_positive, scores)?;
    let (p, n) = (ranked.positives(), ranked.negatives());
    require_both_classes(WHAT, p, n)?;

    // Sensitivity is computed as in `Confusion::sensitivity`, so the promise holds for the
    // reported figure exactly. Candidates run from +inf down; tps and fps never decrease.
    let reaches = |tp: u64| tp as f64 / p as f64 >= target_sensitivity;
    let mut best = if reaches(0) {
        None
    } else {
        // The last distinct score has tp == p, so some candidate reaches any target <= 1.
        let first = (0..ranked.len())
            .find(|&k| reaches(ranked.tps[k]))
            .unwrap_or(ranked.len() - 1);
        Some(first)
    };
    // Fewest false positives is the first qualifying candidate; slide down while the false
    // positives stay the same to gain sensitivity for free.
    let fp_best = best.map_or(0, |k| ranked.fps[k]);
    let start = best.map_or(0, |k| k + 1);
    for k in start..ranked.len() {
        if ranked.fps[k] != fp_best {
            break;
        }
        best = Some(k);
    }
    Ok(OperatingPoint::at(&ranked, best))
}

/// The threshold maximising Youden's J = sensitivity + specificity - 1 (ties: the highest
/// threshold, as `argmax` over scikit-learn's ROC curve). J is compared in exact integers, so
/// ties are real ties. Starts from `+inf` (J = 0), which wins only if every score does worse.
///
/// # Errors
/// Empty input, differing lengths, a non-finite score, or one class only.
///
/// # Example
/// ```
/// use fracture_metrics::youden_threshold;
/// let op = youden_threshold(&[true, false, true, false], &[0.9, 0.8, 0.7, 0.1])?;
/// // 0.9 (sensitivity 0.5, specificity 1) ties with 0.7 (1, 0.5) at J = 0.5: the higher wins
/// assert_eq!(op.threshold, 0.9);
/// assert_eq!(op.youden_j(), 0.5);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
pub fn youden_threshold(labels_positive: &[bool], scores: &[f64]) -> Result<OperatingPoint> {
    const WHAT: &str = "youden_threshold";
    let ranked = RankedCounts::new(WHAT, labels_positive, scores)?;
    let (p, n) = (ranked.positives(), ranked.negatives());
    require_both_classes(WHAT, p, n)?;
    // J * P * N = tp * N - fp * P
    let scaled_j = |k: usize| {
        i128::from(ranked.tps[k]) * i128::from(n) - i128::from(ranked.fps[k]) * i128::from(p)
    };
    let (mut best, mut best_j) = (None, 0i128);
    for k in 0..ranked.len() {
        let j = scaled_j(k);
        if j > best_j {
            (best, best_j) = (Some(k), j);
        }
    }
    Ok(OperatingPoint::at(&ranked, best))
}
