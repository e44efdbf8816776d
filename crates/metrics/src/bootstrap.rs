//! Seeded bootstrap 95 % confidence intervals for ROC-AUC, sensitivity and specificity.
//!
//! Each resample draws `n` samples with replacement (a [`ChaCha8Rng`] seeded with `seed`, so the
//! result depends only on the inputs and the seed), recomputes the metrics at the fixed
//! threshold, and the interval is the 2.5th and 97.5th percentile of the resampled values
//! (linear interpolation between order statistics, numpy's default `percentile`).
//!
//! **Resamples lacking a class.** A resample without fractured samples has no sensitivity, one
//! without intact samples no specificity, and either has no AUC. Such a resample is left out of
//! that metric's interval only (the percentile bootstrap conditioned on the class being
//! present); [`Interval::n_valid`] says how many resamples each interval rests on. Both classes
//! must be present in the full input.
//!
//! Each resample costs O(n): the scores are ranked once and a resample only recounts how many
//! of each rank it drew.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::confusion::Confusion;
use crate::error::{MetricsError, Result};
use crate::labels::{check_threshold, require_both_classes};
use crate::ranking::{mann_whitney_auc, RankedCounts};

/// Confidence level of every interval produced here.
pub const BOOTSTRAP_LEVEL: f64 = 0.95;
/// Quantiles bounding the interval, written out: `(1.0 - 0.95) / 2.0` is not exactly 0.025.
const LOWER_QUANTILE: f64 = 0.025;
const UPPER_QUANTILE: f64 = 0.975;

/// A point estimate with its bootstrap percentile interval.
///
/// # Example
/// ```
/// use fracture_metrics::bootstrap_ci;
/// let labels = [true, false, true, false, true, false, true, false];
/// let scores = [0.9, 0.2, 0.8, 0.3, 0.4, 0.6, 0.7, 0.1];
/// let ci = bootstrap_ci(&labels, &scores, 0.5, 200, 7)?;
/// let auc = ci.auc;
/// assert!(auc.lower <= auc.estimate && auc.estimate <= auc.upper);
/// assert!(auc.n_valid <= 200);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The metric on the full (not resampled) input.
    pub estimate: f64,
    /// 2.5th percentile of the resampled values.
    pub lower: f64,
    /// 97.5th percentile of the resampled values.
    pub upper: f64,
    /// Number of resamples that held the classes this metric needs.
    pub n_valid: usize,
}

/// Bootstrap intervals for the headline figures of a binary classifier.
///
/// # Example
/// ```
/// use fracture_metrics::bootstrap_ci;
/// let labels: Vec<bool> = (0..40).map(|i| i % 3 == 0).collect();
/// let scores: Vec<f64> = (0..40).map(|i| if i % 3 == 0 { 0.6 } else { 0.4 } + (i % 5) as f64 * 0.05).collect();
/// let a = bootstrap_ci(&labels, &scores, 0.5, 300, 42)?;
/// let b = bootstrap_ci(&labels, &scores, 0.5, 300, 42)?;
/// assert_eq!(a, b); // same seed, same intervals
/// assert!(a.sensitivity.lower <= a.sensitivity.upper);
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapCi {
    /// ROC-AUC.
    pub auc: Interval,
    /// Sensitivity (recall of fractured) at `threshold`.
    pub sensitivity: Interval,
    /// Specificity at `threshold`.
    pub specificity: Interval,
    /// The threshold sensitivity and specificity were measured at.
    pub threshold: f64,
    /// Number of resamples drawn.
    pub n_resamples: usize,
    /// The seed of the resampling generator.
    pub seed: u64,
    /// Confidence level, [`BOOTSTRAP_LEVEL`].
    pub level: f64,
}

/// Seeded percentile-bootstrap 95 % intervals for ROC-AUC, and for sensitivity and specificity
/// at `threshold` (predict fractured when `score >= threshold`). See the module docs for how
/// resamples lacking a class are treated. A thousand or more resamples are customary.
///
/// # Errors
/// Empty input, differing lengths, a non-finite score, a NaN threshold, one class only in the
/// input, `n_resamples == 0`, or ([`MetricsError::NoValidResample`]) every resample lacking a
/// class a metric needs (possible only for tiny inputs).
///
/// # Example
/// ```
/// use fracture_metrics::bootstrap_ci;
/// let ci = bootstrap_ci(&[true, false, true, false], &[0.9, 0.1, 0.6, 0.7], 0.5, 100, 1)?;
/// assert_eq!(ci.auc.estimate, 0.75);
/// assert!(bootstrap_ci(&[true, true], &[0.9, 0.1], 0.5, 100, 1).is_err());
/// # Ok::<(), fracture_metrics::MetricsError>(())
/// ```
pub fn bootstrap_ci(
    labels_positive: &[bool],
    scores: &[f64],
    threshold: f64,
    n_resamples: usize,
    seed: u64,
) -> Result<BootstrapCi> {
    const WHAT: &str = "bootstrap_ci";
    let ranked = RankedCounts::new(WHAT, labels_positive, scores)?;
    check_threshold(WHAT, threshold)?;
    require_both_classes(WHAT, ranked.positives(), ranked.negatives())?;
    if n_resamples == 0 {
        return Err(MetricsError::InvalidArgument {
            what: WHAT,
            name: "n_resamples",
            value: "0".into(),
            expected: "at least 1 (1000 or more is customary)",
        });
    }

    // Rank of each sample among the distinct scores (0 = highest), found by binary search in
    // the strictly decreasing thresholds; scores equal to a threshold compare equal there.
    let rank_of: Vec<usize> = scores
        .iter()
        .map(|s| {
            ranked
                .thresholds
                .partition_point(|t| t > s)
                .min(ranked.len() - 1)
        })
        .collect();
    let full = Confusion::at_threshold(labels_positive, scores, threshold)?;

    let n = scores.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut groups = vec![(0u64, 0u64); ranked.len()];
    let (mut aucs, mut sens, mut specs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n_resamples {
        groups.iter_mut().for_each(|g| *g = (0, 0));
        let mut c = Confusion::default();
        for _ in 0..n {
            let i = rng.gen_range(0..n);
            let positive = labels_positive[i];
            let g = &mut groups[rank_of[i]];
            let predicted = scores[i] >= threshold;
            match (positive, predicted) {
                (true, true) => c.tp += 1,
                (true, false) => c.fn_ += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
            }
            if positive {
                g.0 += 1;
            } else {
                g.1 += 1;
            }
        }
        if c.positives() > 0 {
            sens.push(c.sensitivity());
        }
        if c.negatives() > 0 {
            specs.push(c.specificity());
        }
        if c.positives() > 0 && c.negatives() > 0 {
            aucs.push(mann_whitney_auc(groups.iter().copied()));
        }
    }

    let interval =
        |metric: &'static str, estimate: f64, mut values: Vec<f64>| -> Result<Interval> {
            if values.is_empty() {
                return Err(MetricsError::NoValidResample {
                    what: WHAT,
                    metric,
                    n_resamples,
                });
            }
            values.sort_by(f64::total_cmp);
            Ok(Interval {
                estimate,
                lower: percentile(&values, LOWER_QUANTILE),
                upper: percentile(&values, UPPER_QUANTILE),
                n_valid: values.len(),
            })
        };
    Ok(BootstrapCi {
        auc: interval("roc_auc", mann_whitney_auc(ranked.groups()), aucs)?,
        sensitivity: interval("sensitivity", full.sensitivity(), sens)?,
        specificity: interval("specificity", full.specificity(), specs)?,
        threshold,
        n_resamples,
        seed,
        level: BOOTSTRAP_LEVEL,
    })
}

/// The `q`-quantile of sorted, non-empty `values` with linear interpolation between order
/// statistics (numpy's default `percentile`).
fn percentile(values: &[f64], q: f64) -> f64 {
    let pos = q * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(values.len() - 1);
    let frac = pos - lo as f64;
    values[lo] + frac * (values[hi] - values[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], [2.5, 97.5]) == [1.1, 9.4]
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert!((percentile(&v, 0.025) - 1.1).abs() < 1e-12);
        assert!((percentile(&v, 0.975) - 9.4).abs() < 1e-12);
        assert_eq!(percentile(&[5.0], 0.975), 5.0);
    }

    /// The O(n)-per-resample counting must equal the obvious route: materialise each resample
    /// (same generator, same draws) and call the public metrics on it.
    #[test]
    fn equals_naive_resampling() {
        let labels: Vec<bool> = (0..57).map(|i| (i * 5) % 7 < 3).collect();
        let scores: Vec<f64> = (0..57).map(|i| ((i * 13) % 10) as f64 / 10.0).collect();
        let (threshold, n_resamples, seed) = (0.4, 300, 99);
        let ci = bootstrap_ci(&labels, &scores, threshold, n_resamples, seed).unwrap();

        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut aucs, mut sens, mut specs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n_resamples {
            let idx: Vec<usize> = (0..labels.len())
                .map(|_| rng.gen_range(0..labels.len()))
                .collect();
            let l: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
            let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
            let c = Confusion::at_threshold(&l, &s, threshold).unwrap();
            if c.positives() > 0 {
                sens.push(c.sensitivity());
            }
            if c.negatives() > 0 {
                specs.push(c.specificity());
            }
            if let Ok(auc) = crate::roc_auc(&l, &s) {
                aucs.push(auc);
            }
        }
        for (interval, mut values) in [
            (ci.auc, aucs),
            (ci.sensitivity, sens),
            (ci.specificity, specs),
        ] {
            values.sort_by(f64::total_cmp);
            assert_eq!(interval.n_valid, values.len());
            assert_eq!(interval.lower, percentile(&values, 0.025));
            assert_eq!(interval.upper, percentile(&values, 0.975));
        }
    }

    #[test]
    fn tiny_input_reports_partial_validity() {
        // With 2 samples, half the resamples lack one class.
        let ci = bootstrap_ci(&[true, false], &[0.9, 0.1], 0.5, 400, 3).unwrap();
        assert!(
            ci.auc.n_valid > 100 && ci.auc.n_valid < 300,
            "{}",
            ci.auc.n_valid
        );
        assert_eq!((ci.auc.lower, ci.auc.upper), (1.0, 1.0));
        assert!(ci.sensitivity.n_valid > ci.auc.n_valid);
    }
}
