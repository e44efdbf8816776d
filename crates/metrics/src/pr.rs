//! Precision-recall curve and average precision, as scikit-learn's `precision_recall_curve`
//! and `average_precision_score`.
//!
//! Useful when fractures are rare: unlike ROC, precision reacts to the number of false alarms
//! relative to true finds. O(n log n).

use serde::Serialize;

use crate::error::Result;
use crate::labels::require_positive;
use crate::ranking::RankedCounts;

/// A precision-recall curve, laid out as `sklearn.metrics.precision_recall_curve`.
///
/// `thresholds` are the distinct scores in *increasing* order; `precision[k]` and `recall[k]`
/// are measured when predicting fractured for `score >= thresholds[k]`. `precision` and
/// `recall` hold one more entry than `thresholds`: the final point (precision 1, recall 0), which
/// has no threshold. Precision with nothing predicted positive is `0.0`.
///
/// # Example
/// ```
/// use fracture_metrics::pr_curve;
/// let pr = pr_curve(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8])?;
/// assert_eq!(pr.thresholds, vec![0.1, 0.35, 0.4, 0.8]);
/// assert_eq!(pr.recall, vec![1.0, 1.0, 0.5, 0.5, 0.0]);
/// assert_eq!(pr.precision, vec![0.5, 2.0 / 3.0, 0.5, 1.0, 1.0]);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrCurve {
    /// Precision (PPV) at each threshold, then a final 1.0.
    pub precision: Vec<f64>,
    /// Recall (sensitivity) at each threshold (non-increasing), then a final 0.0.
    pub recall: Vec<f64>,
    /// The distinct scores, increasing.
    pub thresholds: Vec<f64>,
}

/// The precision-recall curve, as `sklearn.metrics.precision_recall_curve(labels, scores)`
/// (default `drop_intermediate=False`: every distinct score is a threshold).
///
/// # Errors
/// Empty input, differing lengths, a non-finite score, or no positive label (recall would divide
/// by zero; scikit-learn warns and sets recall to 1). Labels without any negative are fine.
///
/// # Example
/// ```
/// use fracture_metrics::pr_curve;
/// let pr = pr_curve(&[true, false], &[0.7, 0.2])?;
/// assert_eq!(pr.precision.len(), pr.thresholds.len() + 1);
/// assert!(pr_curve(&[false, false], &[0.7, 0.2]).is_err());
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
pub fn pr_curve(labels_positive: &[bool], scores: &[f64]) -> Result<PrCurve> {
    const WHAT: &str = "pr_curve";
    let ranked = RankedCounts::new(WHAT, labels_positive, scores)?;
    require_positive(WHAT, ranked.positives(), ranked.negatives())?;
    let p = ranked.positives() as f64;
    let mut curve = PrCurve {
        precision: Vec::with_capacity(ranked.len() + 1),
        recall: Vec::with_capacity(ranked.len() + 1),
        thresholds: Vec::with_capacity(ranked.len()),
    };
    for k in (0..ranked.len()).rev() {
        let (tp, fp) = (ranked.tps[k], ranked.fps[k]);
        // tp + fp >= 1 at every distinct score, so no zero division can occur here.
        curve.precision.push(tp as f64 / (tp + fp) as f64);
        curve.recall.push(tp as f64 / p);
        curve.thresholds.push(ranked.thresholds[k]);
    }
    curve.precision.push(1.0);
    curve.recall.push(0.0);
    Ok(curve)
}

/// Average precision, scikit-learn's step-wise (non-interpolated) area under the PR curve:
/// `AP = sum_k (R_k - R_{k-1}) P_k` over thresholds from high to low, as
/// `sklearn.metrics.average_precision_score`.
///
/// A random ranking scores about the positive rate; a perfect one scores 1.
///
/// # Errors
/// As [`pr_curve`]: in particular, no positive label is an error.
///
/// # Example
/// ```
/// use fracture_metrics::average_precision;
/// // ranks: positive, negative, positive -> (1/2) * 1 + (1/2) * (2/3)
/// let ap = average_precision(&[true, false, true], &[0.9, 0.5, 0.2])?;
/// assert!((ap - 5.0 / 6.0).abs() < 1e-15);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
pub fn average_precision(labels_positive: &[bool], scores: &[f64]) -> Result<f64> {
    const WHAT: &str = "average_precision";
    let ranked = RankedCounts::new(WHAT, labels_positive, scores)?;
    require_positive(WHAT, ranked.positives(), ranked.negatives())?;
    let p = ranked.positives() as f64;
    let mut tp_prev = 0u64;
    let mut ap = 0.0;
    for (&tp, &fp) in ranked.tps.iter().zip(&ranked.fps) {
        if tp > tp_prev {
            ap += (tp - tp_prev) as f64 / p * (tp as f64 / (tp + fp) as f64);
        }
        tp_prev = tp;
    }
    Ok(ap)
}
