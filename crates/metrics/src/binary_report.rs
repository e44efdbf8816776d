//! The one-stop summary of a binary classifier on one split, for `fracture eval --json` and the
//! trainer's logs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::confusion::Confusion;
use crate::error::Result;
use crate::labels::{check_scored, check_threshold};
use crate::pr::average_precision;
use crate::roc::roc_auc;

/// Every headline figure at one threshold, positive = fractured.
///
/// Threshold metrics follow [`Confusion`] (zero division gives `0.0`). The rank metrics need
/// classes the split may lack: `roc_auc` is `None` (JSON `null`) unless both classes occur,
/// `average_precision` is `None` without a fractured sample.
///
/// # Example
/// ```
/// use fracture_metrics::BinaryReport;
/// let labels = [true, true, false, false, false];
/// let scores = [0.9, 0.3, 0.6, 0.2, 0.1];
/// let r = BinaryReport::new(&labels, &scores, 0.5)?;
/// assert_eq!((r.n, r.n_positive, r.n_negative), (5, 2, 3));
/// assert_eq!(r.roc_auc, Some(5.0 / 6.0));
/// assert_eq!(r.sensitivity, 0.5);
/// let json = serde_json::to_value(&r).unwrap();
/// assert_eq!(json["confusion"]["fn"], 1);
/// // one class only: the rank metrics are absent, the rest is still reported
/// let one = BinaryReport::new(&[false, false], &[0.1, 0.7], 0.5)?;
/// assert_eq!((one.roc_auc, one.specificity), (None, 0.5));
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinaryReport {
    /// Number of samples.
    pub n: u64,
    /// Number of fractured samples.
    pub n_positive: u64,
    /// Number of not-fractured samples.
    pub n_negative: u64,
    /// Predict fractured when `score >= threshold`.
    pub threshold: f64,
    /// ROC-AUC ([`crate::roc_auc`]); `None` unless both classes occur.
    pub roc_auc: Option<f64>,
    /// Average precision ([`crate::average_precision`]); `None` without a fractured sample.
    pub average_precision: Option<f64>,
    /// Accuracy at `threshold`.
    pub accuracy: f64,
    /// Accuracy of always answering the majority class.
    pub majority_baseline: f64,
    /// Balanced accuracy at `threshold`.
    pub balanced_accuracy: f64,
    /// Sensitivity (recall of fractured) at `threshold`.
    pub sensitivity: f64,
    /// Specificity at `threshold`.
    pub specificity: f64,
    /// Precision (PPV) at `threshold`.
    pub precision: f64,
    /// Negative predictive value at `threshold`.
    pub npv: f64,
    /// F1 of the fractured class at `threshold`.
    pub f1: f64,
    /// Cohen's kappa between labels and predictions at `threshold`.
    pub cohen_kappa: f64,
    /// The confusion matrix at `threshold`.
    pub confusion: Confusion,
}

impl BinaryReport {
    /// Computes every figure from labels (`true` = fractured) and P(fractured) scores.
    ///
    /// # Errors
    /// Empty input, differing lengths, a non-finite score or a NaN threshold. One class only is
    /// not an error (see the type's docs).
    ///
    /// # Example
    /// ```
    /// use fracture_metrics::BinaryReport;
    /// assert!(BinaryReport::new(&[true], &[0.5, 0.2], 0.5).is_err());
    /// ```
    pub fn new(labels_positive: &[bool], scores: &[f64], threshold: f64) -> Result<Self> {
        const WHAT: &str = "BinaryReport::new";
        check_scored(WHAT, labels_positive, scores)?;
        check_threshold(WHAT, threshold)?;
        let c = Confusion::at_threshold(labels_positive, scores, threshold)?;
        let both = c.positives() > 0 && c.negatives() > 0;
        Ok(Self {
            n: c.n(),
            n_positive: c.positives(),
            n_negative: c.negatives(),
            threshold,
            roc_auc: both.then(|| roc_auc(labels_positive, scores)).transpose()?,
            average_precision: (c.positives() > 0)
                .then(|| average_precision(labels_positive, scores))
                .transpose()?,
            accuracy: c.accuracy(),
            majority_baseline: c.majority_baseline(),
            balanced_accuracy: c.balanced_accuracy(),
            sensitivity: c.sensitivity(),
            specificity: c.specificity(),
            precision: c.precision(),
            npv: c.npv(),
            f1: c.f1(),
            cohen_kappa: c.cohen_kappa(),
            confusion: c,
        })
    }
}

impl fmt::Display for BinaryReport {
    /// A short plain-text summary, one figure a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
        writeln!(
            f,
            "n = {} ({} fractured, {} not_fractured), threshold {}",
            self.n, self.n_positive, self.n_negative, self.threshold
        )?;
        writeln!(f, "ROC-AUC            {}", opt(self.roc_auc))?;
        writeln!(f, "average precision  {}", opt(self.average_precision))?;
        writeln!(
            f,
            "accuracy           {:.4}  (majority baseline {:.4})",
            self.accuracy, self.majority_baseline
        )?;
        writeln!(f, "balanced accuracy  {:.4}", self.balanced_accuracy)?;
        writeln!(f, "sensitivity        {:.4}", self.sensitivity)?;
        writeln!(f, "specificity        {:.4}", self.specificity)?;
        writeln!(f, "precision (PPV)    {:.4}", self.precision)?;
        writeln!(f, "NPV                {:.4}", self.npv)?;
        writeln!(f, "F1                 {:.4}", self.f1)?;
        writeln!(f, "Cohen's kappa      {:.4}", self.cohen_kappa)?;
        let c = &self.confusion;
        writeln!(
            f,
            "confusion          tp {}  fp {}  tn {}  fn {}",
            c.tp, c.fp, c.tn, c.fn_
        )
    }
}
