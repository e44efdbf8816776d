//! ROC curve and ROC-AUC, as `sklearn.metrics.roc_curve` and `roc_auc_score`.
//!
//! Positive = fractured; `scores` are P(fractured) (or any finite score that grows with the
//! belief in a fracture). Both functions sort once: O(n log n).

use serde::Serialize;

use crate::error::Result;
use crate::labels::require_both_classes;
use crate::ranking::{mann_whitney_auc, RankedCounts};

/// A receiver operating characteristic curve: one point per kept threshold.
///
/// `thresholds` decrease; `thresholds[0]` is `+inf` (nothing predicted positive, the point
/// (0, 0)), and the point `k` is (`fpr[k]`, `tpr[k]`) when predicting fractured for
/// `score >= thresholds[k]`. Serialised to JSON, `+inf` becomes `null`, as in the golden file.
///
/// # Example
/// ```
/// use fracture_metrics::roc_curve;
/// let roc = roc_curve(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8])?;
/// assert_eq!(roc.fpr, vec![0.0, 0.0, 0.5, 0.5, 1.0]);
/// assert_eq!(roc.tpr, vec![0.0, 0.5, 0.5, 1.0, 1.0]);
/// assert_eq!(roc.thresholds, vec![f64::INFINITY, 0.8, 0.4, 0.35, 0.1]);
/// assert_eq!(roc.auc(), 0.75);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RocCurve {
    /// False positive rate (1 - specificity) at each threshold, non-decreasing from 0 to 1.
    pub fpr: Vec<f64>,
    /// True positive rate (sensitivity) at each threshold, non-decreasing from 0 to 1.
    pub tpr: Vec<f64>,
    /// Decreasing thresholds, the first `+inf`; the others are scores from the input.
    pub thresholds: Vec<f64>,
}

impl RocCurve {
    /// Number of points on the curve.
    pub fn len(&self) -> usize {
        self.thresholds.len()
    }

    /// Whether the curve has no points (never true for a curve built by this crate).
    pub fn is_empty(&self) -> bool {
        self.thresholds.is_empty()
    }

    /// Area under this curve by the trapezoidal rule (what scikit-learn's `auc` does); equal
    /// to [`roc_auc`] up to rounding.
    pub fn auc(&self) -> f64 {
        self.fpr
            .windows(2)
            .zip(self.tpr.windows(2))
            .map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0)
            .sum()
    }
}

/// The ROC curve exactly as `sklearn.metrics.roc_curve(labels, scores)` with its default
/// `drop_intermediate=True`: points collinear with their neighbours (no change of direction)
/// are dropped, which leaves the area unchanged.
///
/// # Errors
/// Empty input, differing lengths, a non-finite score, or labels of one class only (a rate
/// would divide by zero; scikit-learn returns NaN rates there).
///
/// # Example
/// ```
/// use fracture_metrics::roc_curve;
/// let roc = roc_curve(&[true, false, true], &[0.9, 0.5, 0.2])?;
/// assert_eq!(roc.thresholds[0], f64::INFINITY);
/// assert!(roc_curve(&[true, true], &[0.9, 0.5]).is_err());
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
pub fn roc_curve(labels_positive: &[bool], scores: &[f64]) -> Result<RocCurve> {
    roc_curve_impl("roc_curve", labels_positive, scores, true)
}

/// The ROC curve with one point per distinct score, as `sklearn.metrics.roc_curve(...,
/// drop_intermediate=False)`.
///
/// # Errors
/// As [`roc_curve`].
///
/// # Example
/// ```
/// use fracture_metrics::{roc_curve, roc_curve_all_thresholds};
/// let (labels, scores) = ([true, true, true, false], [0.9, 0.8, 0.7, 0.1]);
/// assert_eq!(roc_curve_all_thresholds(&labels, &scores)?.len(), 5);
/// // the point at 0.8 lies on the straight line from 0.9 to 0.7, so it is dropped by default
/// assert_eq!(roc_curve(&labels, &scores)?.len(), 4);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
pub fn roc_curve_all_thresholds(labels_positive: &[bool], scores: &[f64]) -> Result<RocCurve> {
    roc_curve_impl("roc_curve_all_thresholds", labels_positive, scores, false)
}

fn roc_curve_impl(
    what: &'static str,
    labels_positive: &[bool],
    scores: &[f64],
    drop_intermediate: bool,
) -> Result<RocCurve> {
    let ranked = RankedCounts::new(what, labels_positive, scores)?;
    let (p, n) = (ranked.positives(), ranked.negatives());
    require_both_classes(what, p, n)?;

    let len = ranked.len();
    let keep = |k: usize| -> bool {
        if !drop_intermediate || k == 0 || k + 1 == len {
            return true;
        }
        let bends = |v: &[u64]| v[k + 1] + v[k - 1] != 2 * v[k];
        bends(&ranked.fps) || bends(&ranked.tps)
    };

    let mut roc = RocCurve {
        fpr: vec![0.0],
        tpr: vec![0.0],
        thresholds: vec![f64::INFINITY],
    };
    for k in (0..len).filter(|&k| keep(k)) {
        roc.fpr.push(ranked.fps[k] as f64 / n as f64);
        roc.tpr.push(ranked.tps[k] as f64 / p as f64);
        roc.thresholds.push(ranked.thresholds[k]);
    }
    Ok(roc)
}

/// Area under the ROC curve: the probability that a random fractured sample scores above a
/// random intact one, ties counting one half (the Mann-Whitney U statistic over `P * N`), as
/// `sklearn.metrics.roc_auc_score`. Computed from exact integer counts in O(n log n).
///
/// # Errors
/// Empty input, differing lengths, a non-finite score, or labels of one class only (scikit-learn
/// raises there too).
///
/// # Example
/// ```
/// use fracture_metrics::roc_auc;
/// // one positive above both negatives, the other tied with one of them
/// assert_eq!(roc_auc(&[true, true, false, false], &[0.9, 0.3, 0.3, 0.1])?, 0.875);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
pub fn roc_auc(labels_positive: &[bool], scores: &[f64]) -> Result<f64> {
    const WHAT: &str = "roc_auc";
    let ranked = RankedCounts::new(WHAT, labels_positive, scores)?;
    require_both_classes(WHAT, ranked.positives(), ranked.negatives())?;
    Ok(mann_whitney_auc(ranked.groups()))
}
