//! Figures not in the golden file, checked against scikit-learn 1.9.1 output pasted below
//! (candle style: the Python that produced each number sits above its test).
//!
//! ```python
//! import numpy as np
//! from sklearn.metrics import (precision_recall_curve, average_precision_score,
//!                              classification_report, balanced_accuracy_score)
//! y = np.array([1,0,1,1,0,0,1,0,0,0,1,0])
//! s = np.array([0.8,0.3,0.3,0.55,0.55,0.1,0.9,0.2,0.55,0.05,0.3,0.7])
//! ```

use fracture_metrics::{average_precision, pr_curve, ClassificationReport, Confusion};

const Y: [u8; 12] = [1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0];
const S: [f64; 12] = [
    0.8, 0.3, 0.3, 0.55, 0.55, 0.1, 0.9, 0.2, 0.55, 0.05, 0.3, 0.7,
];

fn labels() -> Vec<bool> {
    Y.iter().map(|&y| y == 1).collect()
}

fn assert_all_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12,
            "{what}[{k}] = {g}, scikit-learn says {w}"
        );
    }
}

/// `p, r, t = precision_recall_curve(y, s)`; `average_precision_score(y, s)`
#[test]
fn pr_curve_and_average_precision() {
    let pr = pr_curve(&labels(), &S).unwrap();
    assert_all_close(
        "precision",
        &pr.precision,
        &[
            0.4166666666666667,
            0.45454545454545453,
            0.5,
            0.5555555555555556,
            0.5,
            0.6666666666666666,
            1.0,
            1.0,
            1.0,
        ],
    );
    assert_all_close(
        "recall",
        &pr.recall,
        &[1.0, 1.0, 1.0, 1.0, 0.6, 0.4, 0.4, 0.2, 0.0],
    );
    assert_all_close(
        "thresholds",
        &pr.thresholds,
        &[0.05, 0.1, 0.2, 0.3, 0.55, 0.7, 0.8, 0.9],
    );
    let ap = average_precision(&labels(), &S).unwrap();
    assert!((ap - 0.7222222222222222).abs() <= 1e-12, "AP {ap}");
}

/// `yi = np.where(y==1, 0, 1); pi = np.where(s>=0.5, 0, 1)`
/// `classification_report(yi, pi, labels=[0,1], target_names=["fractured","not_fractured"])`
#[test]
fn classification_report_text_is_sklearns() {
    let report = ClassificationReport::at_threshold(&labels(), &S, 0.5).unwrap();
    let want2 = "               precision    recall  f1-score   support\n\n    fractured       0.50      0.60      0.55         5\nnot_fractured       0.67      0.57      0.62         7\n\n     accuracy                           0.58        12\n    macro avg       0.58      0.59      0.58        12\n weighted avg       0.60      0.58      0.59        12\n";
    assert_eq!(report.to_string(), want2);
    // digits=4
    let want4 = "               precision    recall  f1-score   support\n\n    fractured     0.5000    0.6000    0.5455         5\nnot_fractured     0.6667    0.5714    0.6154         7\n\n     accuracy                         0.5833        12\n    macro avg     0.5833    0.5857    0.5804        12\n weighted avg     0.5972    0.5833    0.5862        12\n";
    assert_eq!(report.to_text(4), want4);
}

/// `classification_report([0,1,2,2,0], [0,2,2,2,1], labels=[0,1,2,3],
///     target_names=["a","b","c","a-long-class-name"], zero_division=0)`
#[test]
fn classification_report_with_an_absent_class() {
    let names = ["a", "b", "c", "a-long-class-name"];
    let report = ClassificationReport::new(&[0, 1, 2, 2, 0], &[0, 2, 2, 2, 1], &names).unwrap();
    let want = "                   precision    recall  f1-score   support\n\n                a       1.00      0.50      0.67         2\n                b       0.00      0.00      0.00         1\n                c       0.67      1.00      0.80         2\na-long-class-name       0.00      0.00      0.00         0\n\n         accuracy                           0.60         5\n        macro avg       0.42      0.38      0.37         5\n     weighted avg       0.67      0.60      0.59         5\n";
    assert_eq!(report.to_string(), want);
}

/// `average_precision_score([1,1,1], [0.2,0.5,0.5])` = 1.0;
/// `balanced_accuracy_score([0,0,0], [0,1,0])` = 0.6666666666666666
#[test]
fn one_class_conventions() {
    assert_eq!(
        average_precision(&[true, true, true], &[0.2, 0.5, 0.5]).unwrap(),
        1.0
    );
    let c = Confusion::from_predictions(&[false, false, false], &[false, true, false]).unwrap();
    assert!((c.balanced_accuracy() - 0.6666666666666666).abs() <= 1e-15);
}
