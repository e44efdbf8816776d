//! Property tests against naive O(n^2) oracles, on random data with many ties.
//!
//! Scores are drawn from eleven values (0.0, 0.1, ..., 1.0) so ties are everywhere; the first
//! two labels are forced to one fractured and one intact sample so every rank metric is defined.

use fracture_metrics::{
    average_precision, bootstrap_ci, pr_curve, roc_auc, roc_curve, roc_curve_all_thresholds,
    threshold_for_sensitivity, youden_threshold, BinaryReport, ClassificationReport, Confusion,
};
use proptest::prelude::*;

/// Labels with both classes and tied scores in [0, 1].
fn data() -> impl Strategy<Value = (Vec<bool>, Vec<f64>)> {
    (2usize..60).prop_flat_map(|n| {
        (
            proptest::collection::vec(any::<bool>(), n - 2),
            proptest::collection::vec(0u8..=10, n),
        )
            .prop_map(|(rest, ticks)| {
                let mut labels = vec![true, false];
                labels.extend(rest);
                let scores = ticks.iter().map(|&t| f64::from(t) / 10.0).collect();
                (labels, scores)
            })
    })
}

/// `data()` plus a permutation of its samples.
fn data_and_permutation() -> impl Strategy<Value = (Vec<bool>, Vec<f64>, Vec<usize>)> {
    data().prop_flat_map(|(labels, scores)| {
        let n = labels.len();
        (
            Just(labels),
            Just(scores),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        )
    })
}

/// The Mann-Whitney oracle: over all (positive, negative) pairs, 1 if the positive scores
/// higher, 1/2 on a tie.
fn naive_auc(labels: &[bool], scores: &[f64]) -> f64 {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (i, &li) in labels.iter().enumerate() {
        for (j, &lj) in labels.iter().enumerate() {
            if li && !lj {
                pairs += 1.0;
                if scores[i] > scores[j] {
                    wins += 1.0;
                } else if scores[i] == scores[j] {
                    wins += 0.5;
                }
            }
        }
    }
    wins / pairs
}

/// The ranking oracle for AP: the mean over positives of the precision at their own score.
fn naive_average_precision(labels: &[bool], scores: &[f64]) -> f64 {
    let positives: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
    let mut sum = 0.0;
    for &i in &positives {
        let c = Confusion::at_threshold(labels, scores, scores[i]).unwrap();
        sum += c.precision();
    }
    sum / positives.len() as f64
}

/// Every threshold worth considering: +inf and each distinct score.
fn candidates(scores: &[f64]) -> Vec<f64> {
    let mut t = scores.to_vec();
    t.push(f64::INFINITY);
    t.sort_by(f64::total_cmp);
    t.dedup();
    t
}

fn permute<T: Copy>(v: &[T], perm: &[usize]) -> Vec<T> {
    perm.iter().map(|&i| v[i]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn auc_equals_pairwise_mann_whitney((labels, scores) in data()) {
        let auc = roc_auc(&labels, &scores).unwrap();
        prop_assert!((auc - naive_auc(&labels, &scores)).abs() < 1e-12);
        // sklearn's route: trapezoid area under the (dropped or full) curve
        prop_assert!((roc_curve(&labels, &scores).unwrap().auc() - auc).abs() < 1e-12);
        prop_assert!((roc_curve_all_thresholds(&labels, &scores).unwrap().auc() - auc).abs() < 1e-12);
    }

    #[test]
    fn auc_of_negated_scores_is_one_minus_auc((labels, scores) in data()) {
        let negated: Vec<f64> = scores.iter().map(|s| -s).collect();
        let a = roc_auc(&labels, &scores).unwrap();
        let b = roc_auc(&labels, &negated).unwrap();
        prop_assert!((a + b - 1.0).abs() < 1e-12, "{} + {} != 1", a, b);
    }

    #[test]
    fn average_precision_equals_mean_precision_at_positives((labels, scores) in data()) {
        let ap = average_precision(&labels, &scores).unwrap();
        prop_assert!((ap - naive_average_precision(&labels, &scores)).abs() < 1e-12);
    }

    #[test]
    fn metrics_are_invariant_to_sample_order((labels, scores, perm) in data_and_permutation()) {
        let (pl, ps) = (permute(&labels, &perm), permute(&scores, &perm));
        prop_assert_eq!(roc_auc(&labels, &scores).unwrap(), roc_auc(&pl, &ps).unwrap());
        prop_assert_eq!(
            average_precision(&labels, &scores).unwrap(),
            average_precision(&pl, &ps).unwrap()
        );
        prop_assert_eq!(roc_curve(&labels, &scores).unwrap(), roc_curve(&pl, &ps).unwrap());
        prop_assert_eq!(pr_curve(&labels, &scores).unwrap(), pr_curve(&pl, &ps).unwrap());
        for t in [0.0, 0.35, 0.5, 1.0] {
            prop_assert_eq!(
                BinaryReport::new(&labels, &scores, t).unwrap(),
                BinaryReport::new(&pl, &ps, t).unwrap()
            );
            prop_assert_eq!(
                ClassificationReport::at_threshold(&labels, &scores, t).unwrap(),
                ClassificationReport::at_threshold(&pl, &ps, t).unwrap()
            );
        }
        prop_assert_eq!(youden_threshold(&labels, &scores).unwrap(), youden_threshold(&pl, &ps).unwrap());
        prop_assert_eq!(
            threshold_for_sensitivity(&labels, &scores, 0.9).unwrap(),
            threshold_for_sensitivity(&pl, &ps, 0.9).unwrap()
        );
    }

    #[test]
    fn roc_points_are_the_confusions_at_their_thresholds((labels, scores) in data()) {
        let full = roc_curve_all_thresholds(&labels, &scores).unwrap();
        let dropped = roc_curve(&labels, &scores).unwrap();
        prop_assert_eq!(full.len(), candidates(&scores).len());
        for k in 1..full.len() {
            let c = Confusion::at_threshold(&labels, &scores, full.thresholds[k]).unwrap();
            prop_assert_eq!(full.tpr[k], c.sensitivity());
            prop_assert!((full.fpr[k] - (1.0 - c.specificity())).abs() < 1e-12);
        }
        // the default curve keeps a subset of the points, first and last included
        for (k, t) in dropped.thresholds.iter().enumerate() {
            let j = full.thresholds.iter().position(|u| u == t).unwrap();
            prop_assert_eq!((full.fpr[j], full.tpr[j]), (dropped.fpr[k], dropped.tpr[k]));
        }
        prop_assert_eq!(dropped.thresholds.last(), full.thresholds.last());
    }

    #[test]
    fn target_sensitivity_point_is_optimal((labels, scores) in data(), target in 0.0f64..=1.0) {
        let op = threshold_for_sensitivity(&labels, &scores, target).unwrap();
        prop_assert!(op.sensitivity >= target);
        prop_assert_eq!(op.confusion, Confusion::at_threshold(&labels, &scores, op.threshold).unwrap());
        for t in candidates(&scores) {
            let c = Confusion::at_threshold(&labels, &scores, t).unwrap();
            if c.sensitivity() >= target {
                prop_assert!(
                    c.specificity() < op.specificity
                        || (c.specificity() == op.specificity && c.sensitivity() <= op.sensitivity),
                    "threshold {} beats the chosen {}", t, op.threshold
                );
            }
        }
    }

    #[test]
    fn youden_point_is_optimal((labels, scores) in data()) {
        let op = youden_threshold(&labels, &scores).unwrap();
        prop_assert_eq!(op.confusion, Confusion::at_threshold(&labels, &scores, op.threshold).unwrap());
        for t in candidates(&scores) {
            let c = Confusion::at_threshold(&labels, &scores, t).unwrap();
            prop_assert!(c.sensitivity() + c.specificity() - 1.0 <= op.youden_j() + 1e-12);
        }
    }

    #[test]
    fn confusion_ratios_are_consistent((labels, scores) in data(), t in 0.0f64..=1.0) {
        let c = Confusion::at_threshold(&labels, &scores, t).unwrap();
        prop_assert_eq!(c.n() as usize, labels.len());
        let correct = labels.iter().zip(&scores).filter(|(&l, &s)| l == (s >= t)).count();
        prop_assert!((c.accuracy() - correct as f64 / labels.len() as f64).abs() < 1e-15);
        let (p, r) = (c.precision(), c.recall());
        if p + r > 0.0 {
            prop_assert!((c.f1() - 2.0 * p * r / (p + r)).abs() < 1e-12);
        }
        prop_assert!((-1.0..=1.0).contains(&c.cohen_kappa()));
        prop_assert!(c.majority_baseline() >= 0.5);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn bootstrap_is_seeded_and_brackets_sensibly((labels, scores) in data(), seed in any::<u64>()) {
        let a = bootstrap_ci(&labels, &scores, 0.5, 200, seed).unwrap();
        prop_assert_eq!(a, bootstrap_ci(&labels, &scores, 0.5, 200, seed).unwrap());
        for i in [a.auc, a.sensitivity, a.specificity] {
            prop_assert!(0.0 <= i.lower && i.lower <= i.upper && i.upper <= 1.0);
            prop_assert!(i.n_valid >= 1 && i.n_valid <= 200);
        }
        prop_assert_eq!(a.auc.estimate, roc_auc(&labels, &scores).unwrap());
    }
}

/// On a large, well-separated sample the 95 % interval should be narrow and contain the
/// estimate; the same seed gives the same interval, another seed a (slightly) different one.
#[test]
fn bootstrap_on_a_large_sample() {
    let n = 2000;
    let labels: Vec<bool> = (0..n).map(|i| i % 4 == 0).collect();
    // deterministic pseudo-noise: scores overlap between classes
    let scores: Vec<f64> = (0..n)
        .map(|i| {
            let noise = ((i * 7919) % 1000) as f64 / 1000.0;
            if labels[i] {
                0.3 + 0.6 * noise
            } else {
                0.6 * noise
            }
        })
        .collect();
    let ci = bootstrap_ci(&labels, &scores, 0.5, 500, 11).unwrap();
    println!("{ci:?}");
    for i in [ci.auc, ci.sensitivity, ci.specificity] {
        assert!(i.lower <= i.estimate && i.estimate <= i.upper, "{i:?}");
        assert!(i.upper - i.lower < 0.1, "{i:?}");
        assert_eq!(i.n_valid, 500);
    }
    let other = bootstrap_ci(&labels, &scores, 0.5, 500, 12).unwrap();
    assert_ne!(ci.auc.lower, other.auc.lower);
}
