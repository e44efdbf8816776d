//! Samples ranked by score: the cumulative counts every curve and rank metric is read from.
//!
//! The same construction as scikit-learn's private `_binary_clf_curve`: sort by score,
//! descending; at each distinct score `t` count the positives (`tps`) and negatives (`fps`) with
//! `score >= t`. Tied scores form one step, which is what makes ties count one half in the AUC.
//! Sorting makes everything here O(n log n).

use std::cmp::Ordering;

use crate::error::Result;
use crate::labels::check_scored;

/// Cumulative counts at each distinct score, highest score first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RankedCounts {
    /// The distinct scores, strictly decreasing (`-0.0` is written `0.0`).
    pub thresholds: Vec<f64>,
    /// `tps[k]`: positives with `score >= thresholds[k]`.
    pub tps: Vec<u64>,
    /// `fps[k]`: negatives with `score >= thresholds[k]`.
    pub fps: Vec<u64>,
}

impl RankedCounts {
    /// Ranks `scores` (checked: same length as `labels`, non-empty, finite).
    pub fn new(what: &'static str, labels: &[bool], scores: &[f64]) -> Result<Self> {
        check_scored(what, labels, scores)?;
        let mut ranked: Vec<(f64, bool)> =
            scores.iter().copied().zip(labels.iter().copied()).collect();
        // Scores are finite, so `partial_cmp` is total here; it also keeps -0.0 == 0.0 as numpy does.
        ranked.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));

        let mut out = Self {
            thresholds: Vec::new(),
            tps: Vec::new(),
            fps: Vec::new(),
        };
        let (mut tp, mut fp) = (0u64, 0u64);
        for (i, &(score, positive)) in ranked.iter().enumerate() {
            if positive {
                tp += 1;
            } else {
                fp += 1;
            }
            let last_of_group = i + 1 == ranked.len() || ranked[i + 1].0 != score;
            if last_of_group {
                out.thresholds.push(score + 0.0);
                out.tps.push(tp);
                out.fps.push(fp);
            }
        }
        Ok(out)
    }

    /// Number of positive labels.
    pub fn positives(&self) -> u64 {
        self.tps.last().copied().unwrap_or(0)
    }

    /// Number of negative labels.
    pub fn negatives(&self) -> u64 {
        self.fps.last().copied().unwrap_or(0)
    }

    /// Number of distinct scores.
    pub fn len(&self) -> usize {
        self.thresholds.len()
    }

    /// `(positives, negatives)` holding each distinct score, highest score first.
    pub fn groups(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.len()).map(|k| match k {
            0 => (self.tps[0], self.fps[0]),
            _ => (self.tps[k] - self.tps[k - 1], self.fps[k] - self.fps[k - 1]),
        })
    }
}

/// ROC-AUC from `(positives, negatives)` per tied-score group, highest score first: the
/// Mann-Whitney `U / (P N)` where each (positive, negative) pair counts 1 if the positive scores
/// higher and 1/2 on a tie. `2U` is summed in exact integers, then divided once.
///
/// Returns NaN if either class is absent (callers check first).
pub(crate) fn mann_whitney_auc(groups: impl Iterator<Item = (u64, u64)>) -> f64 {
    let (mut twice_u, mut pos_above, mut neg_total) = (0u128, 0u64, 0u64);
    for (pos_here, neg_here) in groups {
        twice_u += u128::from(neg_here) * u128::from(2 * pos_above + pos_here);
        pos_above += pos_here;
        neg_total += neg_here;
    }
    twice_u as f64 / (2 * u128::from(pos_above) * u128::from(neg_total)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_ties_and_counts() {
        let r = RankedCounts::new(
            "t",
            &[true, false, true, false, false],
            &[0.5, 0.5, 0.9, -0.0, 0.0],
        )
        .unwrap();
        assert_eq!(r.thresholds, vec![0.9, 0.5, 0.0]);
        assert!(r.thresholds[2].is_sign_positive());
        assert_eq!(r.tps, vec![1, 2, 2]);
        assert_eq!(r.fps, vec![0, 1, 3]);
        assert_eq!((r.positives(), r.negatives(), r.len()), (2, 3, 3));
    }
}
