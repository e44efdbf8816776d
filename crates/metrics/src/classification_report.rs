//! Per-class precision, recall, F1 and support, as scikit-learn's `classification_report`.
//!
//! Rows come in class-index order (for this product: fractured, then not_fractured), then the
//! accuracy, macro-average and support-weighted-average rows. [`std::fmt::Display`] prints the
//! same text as scikit-learn (two decimals); [`serde`] gives the JSON form.
//!
//! Every class named is reported, even one absent from both labels and predictions (as
//! scikit-learn with `labels=` given): its precision, recall and F1 are `0.0`
//! (`zero_division=0`), and it counts in the macro average.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::labels::{check_classes, check_lengths, check_scored, check_threshold, CLASS_NAMES};

/// Precision, recall, F1 and support of one class, or of an average over classes.
///
/// # Example
/// ```
/// use fracture_metrics::ClassificationReport;
/// let r = ClassificationReport::new(&[0, 0, 1], &[0, 1, 1], &["a", "b"])?;
/// let a = &r.classes[0];
/// assert_eq!((a.name.as_str(), a.precision, a.recall, a.support), ("a", 1.0, 0.5, 2));
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassRow {
    /// Class name (or "macro avg" / "weighted avg").
    pub name: String,
    /// Of the samples predicted as this class, the fraction that are (0 if none predicted).
    pub precision: f64,
    /// Of the samples of this class, the fraction predicted as it (0 if it has no samples).
    pub recall: f64,
    /// Harmonic mean of precision and recall, `2 tp / (2 tp + fp + fn)` (0 if undefined).
    pub f1: f64,
    /// Number of samples whose label is this class (for averages: all samples).
    pub support: u64,
}

/// A multi-class classification report, as `sklearn.metrics.classification_report`.
///
/// # Example
/// ```
/// use fracture_metrics::ClassificationReport;
/// let labels = [true, true, false, false, false];
/// let scores = [0.9, 0.3, 0.6, 0.2, 0.1];
/// let report = ClassificationReport::at_threshold(&labels, &scores, 0.5)?;
/// assert_eq!(report.classes[0].name, "fractured");
/// assert_eq!(report.accuracy, 0.6);
/// let text = report.to_string();
/// assert!(text.contains("   fractured       0.50      0.50      0.50         2"));
/// let json = serde_json::to_string(&report).unwrap();
/// assert!(json.starts_with(r#"{"classes":[{"name":"fractured","precision":0.5"#));
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// One row per class, in class-index order.
    pub classes: Vec<ClassRow>,
    /// Fraction of samples predicted correctly.
    pub accuracy: f64,
    /// Unweighted mean over classes of precision, recall and F1.
    pub macro_avg: ClassRow,
    /// Mean over classes weighted by support.
    pub weighted_avg: ClassRow,
}

impl ClassificationReport {
    /// The report for class indices `y_true` and `y_pred`, each below `class_names.len()`.
    ///
    /// # Errors
    /// Empty input, differing lengths, no class names, or a class index out of range.
    ///
    /// # Example
    /// ```
    /// use fracture_metrics::ClassificationReport;
    /// let r = ClassificationReport::new(&[0, 1, 2, 2], &[0, 2, 2, 2], &["x", "y", "z"])?;
    /// assert_eq!(r.classes[1].recall, 0.0);
    /// assert!(ClassificationReport::new(&[0, 3], &[0, 1], &["x", "y"]).is_err());
    /// # Ok::<(), fracture_metrics::MetricsError>(())
    /// ```
    pub fn new<S: AsRef<str>>(
        y_true: &[usize],
        y_pred: &[usize],
        class_names: &[S],
    ) -> Result<Self> {
        const WHAT: &str = "ClassificationReport::new";
        check_lengths(WHAT, y_true.len(), y_pred.len(), "predictions")?;
        let k = class_names.len();
        if k == 0 {
            return Err(MetricsError::InvalidArgument {
                what: WHAT,
                name: "class_names",
                value: "[]".into(),
                expected: "at least one class name",
            });
        }
        check_classes(WHAT, y_true, k)?;
        check_classes(WHAT, y_pred, k)?;

        // matrix[t][p]: samples of class t predicted as p
        let mut matrix = vec![vec![0u64; k]; k];
        for (&t, &p) in y_true.iter().zip(y_pred) {
            matrix[t][p] += 1;
        }
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };
        let classes: Vec<ClassRow> = class_names
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let tp = matrix[c][c];
                let support: u64 = matrix[c].iter().sum();
                let predicted: u64 = matrix.iter().map(|row| row[c]).sum();
                let (fn_, fp) = (support - tp, predicted - tp);
                ClassRow {
                    name: name.as_ref().to_string(),
                    precision: ratio(tp, predicted),
                    recall: ratio(tp, support),
                    f1: ratio(2 * tp, 2 * tp + fp + fn_),
                    support,
                }
            })
            .collect();

        let n = y_true.len() as u64;
        let correct: u64 = (0..k).map(|c| matrix[c][c]).sum();
        let average = |name: &str, weight: &dyn Fn(&ClassRow) -> f64| {
            let total: f64 = classes.iter().map(weight).sum();
            let mean = |field: fn(&ClassRow) -> f64| {
                classes.iter().map(|r| weight(r) * field(r)).sum::<f64>() / total
            };
            ClassRow {
                name: name.to_string(),
                precision: mean(|r| r.precision),
                recall: mean(|r| r.recall),
                f1: mean(|r| r.f1),
                support: n,
            }
        };
        let macro_avg = average("macro avg", &|_| 1.0);
        let weighted_avg = average("weighted avg", &|r| r.support as f64);
        Ok(Self {
            accuracy: ratio(correct, n),
            classes,
            macro_avg,
            weighted_avg,
        })
    }

    /// The binary report of this product: fractured when `score >= threshold`, rows in class
    /// index order (`fractured`, `not_fractured`).
    ///
    /// # Errors
    /// Empty input, differing lengths, a non-finite score or a NaN threshold.
    ///
    /// # Example
    /// ```
    /// use fracture_metrics::ClassificationReport;
    /// let r = ClassificationReport::at_threshold(&[true, false], &[0.8, 0.4], 0.5)?;
    /// assert_eq!(r.classes[1].name, "not_fractured");
    /// assert_eq!(r.accuracy, 1.0);
    /// # Ok::<(), fracture_metrics::MetricsError>(())
    /// ```
    pub fn at_threshold(labels_positive: &[bool], scores: &[f64], threshold: f64) -> Result<Self> {
        const WHAT: &str = "ClassificationReport::at_threshold";
        check_scored(WHAT, labels_positive, scores)?;
        check_threshold(WHAT, threshold)?;
        let index = |fractured: bool| usize::from(!fractured); // 0 = fractured, 1 = not_fractured
        let y_true: Vec<usize> = labels_positive.iter().map(|&l| index(l)).collect();
        let y_pred: Vec<usize> = scores.iter().map(|&s| index(s >= threshold)).collect();
        Self::new(&y_true, &y_pred, &CLASS_NAMES)
    }

    /// The text table with `digits` decimals, laid out as scikit-learn's
    /// `classification_report(..., digits=digits)`.
    pub fn to_text(&self, digits: usize) -> String {
        let width = self
            .classes
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0)
            .max("weighted avg".len())
            .max(digits);
        let mut out = format!(
            "{:>width$}  {:>9} {:>9} {:>9} {:>9}\n\n",
            "", "precision", "recall", "f1-score", "support"
        );
        let row = |r: &ClassRow| {
            format!(
                "{:>width$}  {:>9.digits$} {:>9.digits$} {:>9.digits$} {:>9}\n",
                r.name, r.precision, r.recall, r.f1, r.support
            )
        };
        for r in &self.classes {
            out += &row(r);
        }
        out += "\n";
        out += &format!(
            "{:>width$}  {:>9} {:>9} {:>9.digits$} {:>9}\n",
            "accuracy", "", "", self.accuracy, self.macro_avg.support
        );
        out += &row(&self.macro_avg);
        out += &row(&self.weighted_avg);
        out
    }
}

impl fmt::Display for ClassificationReport {
    /// The text table with two decimals, as scikit-learn's default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text(2))
    }
}
