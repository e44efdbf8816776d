//! Degenerate input gives a clear error or a documented value, never a panic.

use fracture_metrics::{
    average_precision, bootstrap_ci, positives_from_classes, pr_curve, roc_auc, roc_curve,
    roc_curve_all_thresholds, threshold_for_sensitivity, youden_threshold, BinaryReport,
    ClassificationReport, Confusion, MetricsError, Result,
};

/// Runs every scored entry point on `(labels, scores)` and returns their results, named.
fn all_scored(labels: &[bool], scores: &[f64]) -> Vec<(&'static str, Result<()>)> {
    vec![
        (
            "Confusion::at_threshold",
            Confusion::at_threshold(labels, scores, 0.5).map(drop),
        ),
        ("roc_curve", roc_curve(labels, scores).map(drop)),
        (
            "roc_curve_all_thresholds",
            roc_curve_all_thresholds(labels, scores).map(drop),
        ),
        ("roc_auc", roc_auc(labels, scores).map(drop)),
        ("pr_curve", pr_curve(labels, scores).map(drop)),
        (
            "average_precision",
            average_precision(labels, scores).map(drop),
        ),
        (
            "threshold_for_sensitivity",
            threshold_for_sensitivity(labels, scores, 0.9).map(drop),
        ),
        (
            "youden_threshold",
            youden_threshold(labels, scores).map(drop),
        ),
        (
            "bootstrap_ci",
            bootstrap_ci(labels, scores, 0.5, 10, 0).map(drop),
        ),
        (
            "BinaryReport::new",
            BinaryReport::new(labels, scores, 0.5).map(drop),
        ),
        (
            "ClassificationReport::at_threshold",
            ClassificationReport::at_threshold(labels, scores, 0.5).map(drop),
        ),
    ]
}

#[test]
fn empty_input_is_an_error_everywhere() {
    for (name, r) in all_scored(&[], &[]) {
        let e = r.expect_err(name);
        assert!(matches!(e, MetricsError::Empty { .. }), "{name}: {e}");
        assert!(e.to_string().starts_with(name), "{name}: message {e}");
    }
    assert!(matches!(
        Confusion::from_predictions(&[], &[]),
        Err(MetricsError::Empty { .. })
    ));
    let none: [&str; 0] = [];
    assert!(ClassificationReport::new(&[], &[], &["a"]).is_err());
    assert!(ClassificationReport::new(&[0], &[0], &none).is_err());
}

#[test]
fn differing_lengths_are_an_error_everywhere() {
    for (name, r) in all_scored(&[true, false, true], &[0.1, 0.2]) {
        let e = r.expect_err(name);
        assert!(
            matches!(
                e,
                MetricsError::LengthMismatch {
                    labels: 3,
                    other: 2,
                    ..
                }
            ),
            "{name}: {e}"
        );
        assert!(
            e.to_string().contains("3 labels but 2 scores"),
            "{name}: {e}"
        );
    }
    assert!(Confusion::from_predictions(&[true], &[true, false]).is_err());
    assert!(ClassificationReport::new(&[0, 1], &[0], &["a", "b"]).is_err());
}

#[test]
fn non_finite_scores_are_an_error_everywhere() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for (name, r) in all_scored(&[true, false, true], &[0.1, bad, 0.3]) {
            let e = r.expect_err(name);
            assert!(
                matches!(e, MetricsError::NonFiniteScore { index: 1, .. }),
                "{name}: {e}"
            );
            assert!(e.to_string().contains("index 1"), "{name}: {e}");
        }
    }
}

#[test]
fn one_class_only() {
    for labels in [[true, true, true], [false, false, false]] {
        let scores = [0.2, 0.7, 0.7];
        // threshold metrics are defined (documented zero-division values)
        let c = Confusion::at_threshold(&labels, &scores, 0.5).unwrap();
        assert_eq!(c.n(), 3);
        let r = BinaryReport::new(&labels, &scores, 0.5).unwrap();
        assert_eq!(r.roc_auc, None);
        assert!(ClassificationReport::at_threshold(&labels, &scores, 0.5).is_ok());
        // rank metrics and operating points need both classes
        for (name, result) in [
            ("roc_auc", roc_auc(&labels, &scores).map(drop)),
            ("roc_curve", roc_curve(&labels, &scores).map(drop)),
            (
                "youden_threshold",
                youden_threshold(&labels, &scores).map(drop),
            ),
            (
                "threshold_for_sensitivity",
                threshold_for_sensitivity(&labels, &scores, 0.5).map(drop),
            ),
            (
                "bootstrap_ci",
                bootstrap_ci(&labels, &scores, 0.5, 10, 0).map(drop),
            ),
        ] {
            let e = result.expect_err(name);
            assert!(matches!(e, MetricsError::OneClass { .. }), "{name}: {e}");
        }
    }
    // all fractured: precision is 1 at any threshold, so AP is defined; all intact: not
    let all_pos = [true, true, true];
    assert_eq!(average_precision(&all_pos, &[0.2, 0.7, 0.7]).unwrap(), 1.0);
    assert_eq!(
        BinaryReport::new(&all_pos, &[0.2, 0.7, 0.7], 0.5)
            .unwrap()
            .average_precision,
        Some(1.0)
    );
    let e = average_precision(&[false, false], &[0.2, 0.7]).unwrap_err();
    assert!(
        e.to_string().contains("expected at least one fractured"),
        "{e}"
    );
    assert!(pr_curve(&[false, false], &[0.2, 0.7]).is_err());
}

#[test]
fn zero_division_values_are_as_documented() {
    // nothing predicted positive: precision 0, F1 0, NPV defined
    let c =
        Confusion::at_threshold(&[true, false, false], &[0.1, 0.2, 0.3], f64::INFINITY).unwrap();
    assert_eq!((c.tp, c.fp, c.tn, c.fn_), (0, 0, 2, 1));
    assert_eq!(c.precision(), 0.0);
    assert_eq!(c.f1(), 0.0);
    assert_eq!(c.npv(), 2.0 / 3.0);
    assert_eq!(c.cohen_kappa(), 0.0);
    // everything predicted positive: NPV 0
    let c = Confusion::at_threshold(&[true, false], &[0.1, 0.2], f64::NEG_INFINITY).unwrap();
    assert_eq!(c.npv(), 0.0);
    assert_eq!(c.specificity(), 0.0);
    // the report of a single sample
    let r = BinaryReport::new(&[true], &[0.9], 0.5).unwrap();
    assert_eq!(
        (r.sensitivity, r.specificity, r.precision, r.npv),
        (1.0, 0.0, 1.0, 0.0)
    );
    assert_eq!(r.balanced_accuracy, 1.0);
}

#[test]
fn bad_arguments_are_errors() {
    let (labels, scores) = ([true, false], [0.9, 0.1]);
    let e = Confusion::at_threshold(&labels, &scores, f64::NAN).unwrap_err();
    assert!(
        matches!(
            e,
            MetricsError::InvalidArgument {
                name: "threshold",
                ..
            }
        ),
        "{e}"
    );
    for target in [-0.1, 1.01, f64::NAN] {
        let e = threshold_for_sensitivity(&labels, &scores, target).unwrap_err();
        assert!(e.to_string().contains("target_sensitivity"), "{e}");
    }
    let e = bootstrap_ci(&labels, &scores, 0.5, 0, 1).unwrap_err();
    assert!(e.to_string().contains("n_resamples"), "{e}");
    assert!(bootstrap_ci(&labels, &scores, f64::NAN, 10, 1).is_err());
    assert!(ClassificationReport::at_threshold(&labels, &scores, f64::NAN).is_err());
    let e = positives_from_classes(&[0, 1, 7]).unwrap_err();
    assert_eq!(
        e,
        MetricsError::ClassOutOfRange {
            what: "positives_from_classes",
            index: 2,
            value: 7,
            n_classes: 2
        }
    );
    assert!(e.to_string().contains("class index 7 at position 2"), "{e}");
}

#[test]
fn extreme_targets_and_thresholds() {
    let (labels, scores) = ([true, false, true, false], [0.9, 0.8, 0.2, 0.1]);
    // target 0 is met by predicting nothing fractured, which has perfect specificity
    let op = threshold_for_sensitivity(&labels, &scores, 0.0).unwrap();
    assert_eq!((op.specificity, op.threshold), (1.0, 0.9));
    // target 1 needs every fracture caught
    let op = threshold_for_sensitivity(&labels, &scores, 1.0).unwrap();
    assert_eq!((op.sensitivity, op.threshold), (1.0, 0.2));
    // a model worse than chance: Youden keeps +inf (J = 0)
    let op = youden_threshold(&[false, true], &[0.9, 0.1]).unwrap();
    assert_eq!(op.threshold, f64::INFINITY);
    assert_eq!(op.youden_j(), 0.0);
    assert!(serde_json::to_value(op).unwrap()["threshold"].is_null());
    // -0.0 and 0.0 are one score
    assert_eq!(roc_auc(&[true, false], &[-0.0, 0.0]).unwrap(), 0.5);
    // huge and tiny finite scores
    assert_eq!(
        roc_auc(&[true, false], &[f64::MAX, -f64::MAX]).unwrap(),
        1.0
    );
}
