//! The 2x2 confusion matrix at one threshold and every ratio read off it.
//!
//! Positive = fractured. A sample is predicted positive when its score (P(fractured)) is
//! `>= threshold`, as in the golden file and as `y_score >= t` in scikit-learn's curves.
//!
//! **Zero division.** A ratio whose denominator is zero (precision with no predicted positives,
//! recall with no positive labels, ...) is `0.0`, as scikit-learn's `zero_division=0`; this keeps
//! every figure finite and JSON-serialisable. [`Confusion::balanced_accuracy`] and
//! [`Confusion::cohen_kappa`] document their own degenerate cases.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::labels::{check_lengths, check_scored, check_threshold};

/// Counts of a binary confusion matrix, positive = fractured.
///
/// Serialised as `{"tp":..,"fp":..,"tn":..,"fn":..}` (the field `fn_` is written `fn`).
///
/// # Example
/// ```
/// use fracture_metrics::Confusion;
/// let labels = [true, true, false, false, false];
/// let scores = [0.9, 0.4, 0.6, 0.2, 0.1];
/// let c = Confusion::at_threshold(&labels, &scores, 0.5)?;
/// assert_eq!(c, Confusion { tp: 1, fp: 1, tn: 2, fn_: 1 });
/// assert_eq!(c.accuracy(), 0.6);
/// assert_eq!(c.recall(), 0.5); // = sensitivity
/// assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"tp":1,"fp":1,"tn":2,"fn":1}"#);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Confusion {
    /// True positives: fractured, predicted fractured.
    pub tp: u64,
    /// False positives: not fractured, predicted fractured.
    pub fp: u64,
    /// True negatives: not fractured, predicted not fractured.
    pub tn: u64,
    /// False negatives: fractured, predicted not fractured (a missed fracture).
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// `num / den`, or `0.0` when `den == 0` (scikit-learn's `zero_division=0`).
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Confusion {
    /// Counts the confusion matrix when `score >= threshold` predicts fractured.
    ///
    /// `labels_positive[i]` is `true` when sample `i` is fractured; `scores[i]` is its
    /// P(fractured) (any finite score works, only the comparison with `threshold` matters).
    ///
    /// # Errors
    /// Empty input, differing lengths, a non-finite score or a NaN threshold. An infinite
    /// threshold is allowed (`+inf`: nothing predicted positive).
    ///
    /// # Example
    /// ```
    /// use fracture_metrics::Confusion;
    /// let c = Confusion::at_threshold(&[true, false], &[0.5, 0.5], 0.5)?;
    /// assert_eq!((c.tp, c.fp), (1, 1)); // ties with the threshold count as positive
    /// assert!(Confusion::at_threshold(&[true], &[f64::NAN], 0.5).is_err());
    /// # Ok::<(), fracture_metrics::MetricsError>(())
    /// ```
    pub fn at_threshold(labels_positive: &[bool], scores: &[f64], threshold: f64) -> Result<Self> {
        const WHAT: &str = "Confusion::at_threshold";
        check_scored(WHAT, labels_positive, scores)?;
        check_threshold(WHAT, threshold)?;
        Ok(Self::count(
            labels_positive
                .iter()
                .zip(scores)
                .map(|(&l, &s)| (l, s >= threshold)),
        ))
    }

    /// Counts the confusion matrix from hard predictions (`true` = predicted fractured).
    ///
    /// # Errors
    /// Empty input or differing lengths.
    ///
    /// # Example
    /// ```
    /// use fracture_metrics::Confusion;
    /// let c = Confusion::from_predictions(&[true, false, false], &[true, true, false])?;
    /// assert_eq!(c, Confusion { tp: 1, fp: 1, tn: 1, fn_: 0 });
    /// # Ok::<(), fracture_metrics::MetricsError>(())
    /// ```
    pub fn from_predictions(labels_positive: &[bool], predicted_positive: &[bool]) -> Result<Self> {
        check_lengths(
            "Confusion::from_predictions",
            labels_positive.len(),
            predicted_positive.len(),
            "predictions",
        )?;
        Ok(Self::count(
            labels_positive
                .iter()
                .copied()
                .zip(predicted_positive.iter().copied()),
        ))
    }

    /// Tallies `(label, prediction)` pairs.
    fn count(pairs: impl Iterator<Item = (bool, bool)>) -> Self {
        let mut c = Self::default();
        for (label, predicted) in pairs {
            match (label, predicted) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
                (true, false) => c.fn_ += 1,
            }
        }
        c
    }

    /// Number of samples.
    pub fn n(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// Number of fractured (positive) labels: `tp + fn`.
    pub fn positives(&self) -> u64 {
        self.tp + self.fn_
    }

    /// Number of not-fractured (negative) labels: `tn + fp`.
    pub fn negatives(&self) -> u64 {
        self.tn + self.fp
    }

    /// Number of samples predicted fractured: `tp + fp`.
    pub fn predicted_positives(&self) -> u64 {
        self.tp + self.fp
    }

    /// Number of samples predicted not fractured: `tn + fn`.
    pub fn predicted_negatives(&self) -> u64 {
        self.tn + self.fn_
    }

    /// `(tp + tn) / n`; `0.0` for an empty matrix.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.n())
    }

    /// Precision = positive predictive value (PPV) = `tp / (tp + fp)`; `0.0` when nothing is
    /// predicted positive (scikit-learn's `zero_division=0`).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.predicted_positives())
    }

    /// Recall = sensitivity = true positive rate = `tp / (tp + fn)`; `0.0` without positive
    /// labels.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.positives())
    }

    /// Sensitivity, the clinical name of [`Confusion::recall`].
    pub fn sensitivity(&self) -> f64 {
        self.recall()
    }

    /// Specificity = true negative rate = `tn / (tn + fp)`; `0.0` without negative labels.
    pub fn specificity(&self) -> f64 {
        ratio(self.tn, self.negatives())
    }

    /// Negative predictive value = `tn / (tn + fn)`; `0.0` when nothing is predicted negative.
    pub fn npv(&self) -> f64 {
        ratio(self.tn, self.predicted_negatives())
    }

    /// F1 = `2 tp / (2 tp + fp + fn)` (the harmonic mean of precision and recall); `0.0` when
    /// `tp + fp + fn == 0`, as scikit-learn's `zero_division=0`.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// Balanced accuracy, the mean of sensitivity and specificity.
    ///
    /// As scikit-learn's `balanced_accuracy_score`, a class absent from the labels is left out
    /// of the mean: with no positive labels this is the specificity, with no negative labels the
    /// sensitivity, and `0.0` for an empty matrix.
    pub fn balanced_accuracy(&self) -> f64 {
        match (self.positives() > 0, self.negatives() > 0) {
            (true, true) => (self.recall() + self.specificity()) / 2.0,
            (true, false) => self.recall(),
            (false, true) => self.specificity(),
            (false, false) => 0.0,
        }
    }

    /// Cohen's kappa between labels and predictions:
    /// `2 (tp tn - fn fp) / ((tp + fp)(fp + tn) + (tp + fn)(fn + tn))`, the binary closed form
    /// of `(p_o - p_e) / (1 - p_e)`, computed in exact integers and divided once.
    ///
    /// Undefined when chance agreement is 1 (labels and predictions all in one and the same
    /// class); scikit-learn returns NaN there, this returns `0.0` (no agreement beyond chance).
    pub fn cohen_kappa(&self) -> f64 {
        let (tp, fp, tn, fn_) = (
            i128::from(self.tp),
            i128::from(self.fp),
            i128::from(self.tn),
            i128::from(self.fn_),
        );
        let num = 2 * (tp * tn - fn_ * fp);
        let den = (tp + fp) * (fp + tn) + (tp + fn_) * (fn_ + tn);
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    }

    /// Accuracy of always answering the majority label: `max(positives, negatives) / n`
    /// (`0.0` for an empty matrix). A model is only useful above this line.
    pub fn majority_baseline(&self) -> f64 {
        ratio(self.positives().max(self.negatives()), self.n())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_division_gives_zero() {
        let c = Confusion {
            tp: 0,
            fp: 0,
            tn: 3,
            fn_: 0,
        };
        assert_eq!(c.precision(), 0.0);
        assert_eq!(c.recall(), 0.0);
        assert_eq!(c.f1(), 0.0);
        assert_eq!(c.specificity(), 1.0);
        assert_eq!(c.balanced_accuracy(), 1.0);
        assert_eq!(c.cohen_kappa(), 0.0);
        assert_eq!(c.majority_baseline(), 1.0);
        let empty = Confusion::default();
        assert_eq!(empty.accuracy(), 0.0);
        assert_eq!(empty.balanced_accuracy(), 0.0);
    }

    #[test]
    fn kappa_matches_po_pe_formula() {
        let c = Confusion {
            tp: 7,
            fp: 3,
            tn: 11,
            fn_: 4,
        };
        let n = c.n() as f64;
        let po = (c.tp + c.tn) as f64 / n;
        let pe = (c.predicted_positives() * c.positives() + c.predicted_negatives() * c.negatives())
            as f64
            / (n * n);
        assert!((c.cohen_kappa() - (po - pe) / (1.0 - pe)).abs() < 1e-15);
    }
}
