//! Local validation (`fracture validate`): how a model does on a hospital's own labelled
//! radiographs, and the threshold that reaches a target sensitivity there.
//!
//! The published experience with fracture models is that the operating point moves from one
//! site to the next even when the ranking (ROC-AUC) holds, so a site checks a model on its own
//! labelled sample and re-chooses the threshold before use. [`LocalValidation::new`] computes
//! what that needs from the labels and scores of the sample: ROC-AUC with its bootstrap
//! interval; sensitivity, specificity, PPV and NPV at the model's threshold and at the
//! threshold that reaches the target sensitivity on this data (with intervals); a reliability
//! (calibration) table; the share of images the model's typicality check accepts; and, with a
//! metadata column, the same per subgroup. [`crate::validation_report`] draws it as one
//! self-contained HTML page.

use fracture_metrics::{bootstrap_ci, roc_auc, roc_curve, threshold_for_sensitivity};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::subgroups::{subgroup_table, SubgroupRow};
use crate::typicality::Typicality;

/// The figures at one threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PointFigures {
    /// Predict fractured when `P >= threshold`.
    pub threshold: f64,
    /// Sensitivity (recall of fractured) and its bootstrap 95 % interval.
    pub sensitivity: f64,
    /// `[lower, upper]`.
    pub sensitivity_ci: [f64; 2],
    /// Specificity and its interval.
    pub specificity: f64,
    /// `[lower, upper]`.
    pub specificity_ci: [f64; 2],
    /// Positive predictive value (precision); `None` when nothing is called fractured.
    pub ppv: Option<f64>,
    /// Negative predictive value; `None` when nothing is called intact.
    pub npv: Option<f64>,
    /// Counts: true positives, false positives, true negatives, false negatives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// True negatives.
    pub tn: usize,
    /// False negatives.
    pub fn_: usize,
}

/// One bin of the reliability diagram: images whose P falls in `[lower, upper)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// Lower edge of the bin.
    pub lower: f64,
    /// Upper edge.
    pub upper: f64,
    /// Images in it.
    pub n: usize,
    /// Their mean predicted P(fractured).
    pub mean_predicted: Option<f64>,
    /// The share of them that are fractured.
    pub observed: Option<f64>,
}

/// Everything `fracture validate` reports (`report.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LocalValidation {
    /// Images.
    pub n: usize,
    /// Fractured images.
    pub positives: usize,
    /// Intact images.
    pub negatives: usize,
    /// ROC-AUC on this data.
    pub auc: f64,
    /// Its bootstrap 95 % interval.
    pub auc_ci: [f64; 2],
    /// The sensitivity the local threshold was chosen to reach.
    pub target_sensitivity: f64,
    /// Figures at the threshold stored in the model (chosen on its own validation data).
    pub at_model_threshold: PointFigures,
    /// Figures at the local threshold: the highest threshold whose sensitivity on this data
    /// reaches the target (the best specificity among those that do).
    pub at_local_threshold: PointFigures,
    /// Reliability diagram: ten equal-width bins of P.
    pub calibration: Vec<CalibrationBin>,
    /// Expected calibration error: the bins' |observed - predicted|, weighted by their size.
    pub expected_calibration_error: f64,
    /// Share of images the model's typicality check calls typical (`None`: the model has no
    /// typicality reference).
    pub typical_share: Option<f64>,
    /// The subgroup column and its rows, with `--meta --by`.
    pub subgroups: Option<(String, Vec<SubgroupRow>)>,
    /// Bootstrap resamples of every interval.
    pub resamples: usize,
    /// ROC curve points `(1 - specificity, sensitivity)` for the plot.
    pub roc: Vec<[f64; 2]>,
    /// P(fractured) of every image and its label, for the histogram.
    pub scores: Vec<(f64, bool)>,
}

/// Record of a local validation kept in a model file's provenance (`--write-model`).
///
/// ```
/// let r = fracture_nn::validation::LocalRecord { data: "mine (12 files, list fnv1a 0x1)".into(), n: 12,
///     target_sensitivity: 0.9, threshold: 0.3, date_unix: 0 };
/// assert!(serde_json::to_string(&r).unwrap().contains("target_sensitivity"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalRecord {
    /// The data: folder name and a fingerprint of its file list.
    pub data: String,
    /// Images validated on.
    pub n: usize,
    /// The target sensitivity.
    pub target_sensitivity: f64,
    /// The threshold it gave (now the model's).
    pub threshold: f64,
    /// When, in seconds since the Unix epoch.
    pub date_unix: u64,
}

impl LocalValidation {
    /// The figures of a labelled sample: `labels[i]` whether image `i` is fractured, `scores[i]`
    /// its P(fractured), `typicality` (if the model has a check) its verdict, `groups` an
    /// optional metadata column (name and value per image). Errors when the sample lacks a
    /// class or the target is not in (0, 1).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        labels: &[bool],
        scores: &[f64],
        typicality: Option<&[Typicality]>,
        groups: Option<(&str, &[Option<String>])>,
        model_threshold: f64,
        target_sensitivity: f64,
        resamples: usize,
        seed: u64,
    ) -> Result<LocalValidation> {
        if !(target_sensitivity > 0.0 && target_sensitivity < 1.0) {
            return Err(Error::Config(format!(
                "the target sensitivity must lie strictly between 0 and 1, got {target_sensitivity}"
            )));
        }
        let positives = labels.iter().filter(|&&y| y).count();
        let negatives = labels.len() - positives;
        if positives == 0 || negatives == 0 {
            return Err(Error::Config(format!(
                "a local validation needs fractured and intact images; this sample has {positives} fractured and {negatives} intact"
            )));
        }
        let auc = roc_auc(labels, scores)?;
        let local = threshold_for_sensitivity(labels, scores, target_sensitivity)?;
        let at_model_threshold = point(labels, scores, model_threshold, resamples, seed)?;
        let at_local_threshold = point(labels, scores, local.threshold, resamples, seed)?;
        let ci = bootstrap_ci(labels, scores, model_threshold, resamples, seed)?;
        let calibration = calibration_bins(labels, scores, 10);
        let ece = calibration
            .iter()
            .filter_map(|b| Some(b.n as f64 * (b.observed? - b.mean_predicted?).abs()))
            .sum::<f64>()
            / labels.len() as f64;
        let roc = roc_curve(labels, scores)?;
        Ok(LocalValidation {
            n: labels.len(),
            positives,
            negatives,
            auc,
            auc_ci: [ci.auc.lower, ci.auc.upper],
            target_sensitivity,
            at_model_threshold,
            at_local_threshold,
            calibration,
            expected_calibration_error: ece,
            typical_share: typicality
                .map(|t| t.iter().filter(|t| t.typical).count() as f64 / t.len().max(1) as f64),
            subgroups: groups.map(|(by, g)| {
                (
                    by.to_string(),
                    subgroup_table(g, labels, scores, model_threshold, resamples, seed),
                )
            }),
            resamples,
            roc: roc
                .fpr
                .iter()
                .zip(&roc.tpr)
                .map(|(&x, &y)| [x, y])
                .collect(),
            scores: scores.iter().copied().zip(labels.iter().copied()).collect(),
        })
    }
}

/// Figures at `threshold` with bootstrap intervals.
fn point(
    labels: &[bool],
    scores: &[f64],
    threshold: f64,
    resamples: usize,
    seed: u64,
) -> Result<PointFigures> {
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for (&y, &p) in labels.iter().zip(scores) {
        match (y, p >= threshold) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
            (true, false) => fn_ += 1,
        }
    }
    // A threshold of +inf (nothing called fractured) is a valid choice; the interval is then
    // taken at the largest finite score's successor.
    let t = if threshold.is_finite() {
        threshold
    } else {
        f64::MAX
    };
    let ci = bootstrap_ci(labels, scores, t, resamples, seed)?;
    let ratio = |a: usize, b: usize| (a + b > 0).then(|| a as f64 / (a + b) as f64);
    Ok(PointFigures {
        threshold,
        sensitivity: tp as f64 / (tp + fn_).max(1) as f64,
        sensitivity_ci: [ci.sensitivity.lower, ci.sensitivity.upper],
        specificity: tn as f64 / (tn + fp).max(1) as f64,
        specificity_ci: [ci.specificity.lower, ci.specificity.upper],
        ppv: ratio(tp, fp),
        npv: ratio(tn, fn_),
        tp,
        fp,
        tn,
        fn_,
    })
}

/// `bins` equal-width bins of P over [0, 1] (the last one closed).
///
/// ```
/// use fracture_nn::validation::calibration_bins;
/// let b = calibration_bins(&[true, false, true], &[0.95, 0.05, 1.0], 10);
/// assert_eq!((b[9].n, b[9].observed), (2, Some(1.0)));
/// assert_eq!((b[0].n, b[0].observed), (1, Some(0.0)));
/// assert_eq!(b[5].mean_predicted, None);
/// ```
pub fn calibration_bins(labels: &[bool], scores: &[f64], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    let mut sum = vec![0f64; bins];
    let mut pos = vec![0usize; bins];
    let mut n = vec![0usize; bins];
    for (&y, &p) in labels.iter().zip(scores) {
        let b = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sum[b] += p;
        n[b] += 1;
        pos[b] += y as usize;
    }
    (0..bins)
        .map(|b| CalibrationBin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            n: n[b],
            mean_predicted: (n[b] > 0).then(|| sum[b] / n[b] as f64),
            observed: (n[b] > 0).then(|| pos[b] as f64 / n[b] as f64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_errors() {
        let labels = [true, true, true, false, false, false, false, false];
        let scores = [0.9, 0.6, 0.3, 0.5, 0.2, 0.1, 0.05, 0.4];
        let v = LocalValidation::new(&labels, &scores, None, None, 0.55, 0.9, 200, 0).unwrap();
        assert_eq!((v.n, v.positives, v.negatives), (8, 3, 5));
        // At 0.55: two of three fractures found, all five intact images cleared.
        let m = &v.at_model_threshold;
        assert_eq!((m.tp, m.fp, m.tn, m.fn_), (2, 0, 5, 1));
        assert_eq!(m.ppv, Some(1.0));
        // Reaching 90 % sensitivity needs all three: threshold 0.3, which also flags 0.5 and 0.4.
        let l = &v.at_local_threshold;
        assert_eq!((l.threshold, l.tp, l.fp), (0.3, 3, 2));
        assert!(l.sensitivity_ci[0] <= l.sensitivity && l.sensitivity <= l.sensitivity_ci[1]);
        assert!((v.auc - 13.0 / 15.0).abs() < 1e-12);
        assert!(v.typical_share.is_none() && v.subgroups.is_none());
        assert!(LocalValidation::new(&labels, &scores, None, None, 0.5, 1.0, 10, 0).is_err());
        assert!(LocalValidation::new(&labels, &scores, None, None, 0.5, 0.0, 10, 0).is_err());
        let e = LocalValidation::new(&[true, true], &[0.1, 0.2], None, None, 0.5, 0.9, 10, 0)
            .unwrap_err();
        assert!(e.to_string().contains("2 fractured and 0 intact"), "{e}");
    }
}
