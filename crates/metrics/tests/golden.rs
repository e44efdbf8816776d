//! Every case of `../shared/golden/metrics.json` (scikit-learn 1.9.1, with ties) must match to
//! 1e-9: confusion, threshold metrics, ROC-AUC, average precision and the ROC curve.
//!
//! Skipped with a message when the shared folder is absent (set `FRACTURE_SHARED` to point
//! elsewhere), and failed instead when `CI` is set.

use fracture_metrics::{
    average_precision, roc_auc, roc_curve, BinaryReport, ClassificationReport, Confusion,
};
use fracture_test_support::shared_path;
use serde_json::Value;

const TOL: f64 = 1e-9;

fn load_cases() -> Option<Vec<Value>> {
    let path = shared_path("golden/metrics.json")?;
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let cases = json["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no \"cases\" array", path.display()))
        .clone();
    assert!(!cases.is_empty(), "{} holds no case", path.display());
    Some(cases)
}

struct Case {
    labels: Vec<bool>,
    scores: Vec<f64>,
    threshold: f64,
    raw: Value,
}

fn parse(raw: &Value) -> Case {
    Case {
        labels: raw["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|l| match l.as_u64() {
                Some(1) => true,
                Some(0) => false,
                other => panic!("label {other:?} is neither 0 nor 1"),
            })
            .collect(),
        scores: raw["scores"]
            .as_array()
            .expect("scores")
            .iter()
            .map(|s| s.as_f64().expect("score"))
            .collect(),
        threshold: raw["threshold"].as_f64().expect("threshold"),
        raw: raw.clone(),
    }
}

fn expected(case: &Case, key: &str) -> f64 {
    case.raw[key]
        .as_f64()
        .unwrap_or_else(|| panic!("golden field {key} missing"))
}

/// `null` in the golden file stands for sklearn's `+inf` threshold.
fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::INFINITY))
        .collect()
}

fn assert_close(what: &str, case: usize, got: f64, want: f64) -> f64 {
    let diff = if got == want { 0.0 } else { (got - want).abs() };
    assert!(
        diff <= TOL,
        "case {case}: {what} = {got}, scikit-learn says {want} (|diff| = {diff:e})"
    );
    diff
}

fn assert_json_close(a: &Value, b: &Value) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-15 * y.abs().max(1.0), "{x} != {y}");
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.len(), y.len());
            for (k, v) in x {
                assert_json_close(v, &y[k]);
            }
        }
        _ => assert_eq!(a, b),
    }
}

#[test]
fn threshold_metrics_match_sklearn() {
    let Some(cases) = load_cases() else { return };
    let mut max_diff = 0.0f64;
    for (i, raw) in cases.iter().enumerate() {
        let case = parse(raw);
        let c = Confusion::at_threshold(&case.labels, &case.scores, case.threshold).unwrap();
        let want: Confusion = serde_json::from_value(case.raw["confusion"].clone()).unwrap();
        assert_eq!(c, want, "case {i}: confusion");
        for (name, got) in [
            ("accuracy", c.accuracy()),
            ("precision", c.precision()),
            ("recall", c.recall()),
            ("specificity", c.specificity()),
            ("f1", c.f1()),
            ("balanced_accuracy", c.balanced_accuracy()),
            ("cohen_kappa", c.cohen_kappa()),
        ] {
            max_diff = max_diff.max(assert_close(name, i, got, expected(&case, name)));
        }
    }
    println!("OK: {} cases, max |diff| {max_diff:e}", cases.len());
}

#[test]
fn rank_metrics_match_sklearn() {
    let Some(cases) = load_cases() else { return };
    let mut max_diff = 0.0f64;
    for (i, raw) in cases.iter().enumerate() {
        let case = parse(raw);
        let auc = roc_auc(&case.labels, &case.scores).unwrap();
        max_diff = max_diff.max(assert_close("roc_auc", i, auc, expected(&case, "roc_auc")));
        let ap = average_precision(&case.labels, &case.scores).unwrap();
        max_diff = max_diff.max(assert_close(
            "average_precision",
            i,
            ap,
            expected(&case, "average_precision"),
        ));
    }
    println!("OK: {} cases, max |diff| {max_diff:e}", cases.len());
}

#[test]
fn roc_curve_matches_sklearn_point_by_point() {
    let Some(cases) = load_cases() else { return };
    let mut max_diff = 0.0f64;
    for (i, raw) in cases.iter().enumerate() {
        let case = parse(raw);
        let roc = roc_curve(&case.labels, &case.scores).unwrap();
        let want = &case.raw["roc_curve"];
        for (name, got, want) in [
            ("fpr", &roc.fpr, floats(&want["fpr"])),
            ("tpr", &roc.tpr, floats(&want["tpr"])),
            ("thresholds", &roc.thresholds, floats(&want["thresholds"])),
        ] {
            assert_eq!(got.len(), want.len(), "case {i}: roc_curve {name} length");
            for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
                max_diff = max_diff.max(assert_close(&format!("roc_curve.{name}[{k}]"), i, g, w));
            }
        }
        assert_eq!(roc.thresholds[0], f64::INFINITY);
        // the trapezoid area of the curve is sklearn's way to the AUC
        assert_close("RocCurve::auc", i, roc.auc(), expected(&case, "roc_auc"));
        // JSON writes +inf as null, as the golden file does
        let json = serde_json::to_value(&roc).unwrap();
        assert!(json["thresholds"][0].is_null());
    }
    println!("OK: {} cases, max |diff| {max_diff:e}", cases.len());
}

#[test]
fn reports_agree_with_the_golden_figures() {
    let Some(cases) = load_cases() else { return };
    for (i, raw) in cases.iter().enumerate() {
        let case = parse(raw);
        let r = BinaryReport::new(&case.labels, &case.scores, case.threshold).unwrap();
        assert_close(
            "report.roc_auc",
            i,
            r.roc_auc.unwrap(),
            expected(&case, "roc_auc"),
        );
        assert_close(
            "report.average_precision",
            i,
            r.average_precision.unwrap(),
            expected(&case, "average_precision"),
        );
        assert_close(
            "report.sensitivity",
            i,
            r.sensitivity,
            expected(&case, "recall"),
        );
        assert_close(
            "report.specificity",
            i,
            r.specificity,
            expected(&case, "specificity"),
        );
        assert_close(
            "report.cohen_kappa",
            i,
            r.cohen_kappa,
            expected(&case, "cohen_kappa"),
        );
        // JSON round trip keeps every figure (to 1 ulp: serde_json's default float parser is
        // not exactly round-trip without its `float_roundtrip` feature)
        let back: BinaryReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(
            back.confusion, r.confusion,
            "case {i}: confusion round trip"
        );
        assert_json_close(
            &serde_json::to_value(back).unwrap(),
            &serde_json::to_value(r).unwrap(),
        );

        let cr =
            ClassificationReport::at_threshold(&case.labels, &case.scores, case.threshold).unwrap();
        let fractured = &cr.classes[0];
        assert_close(
            "report fractured precision",
            i,
            fractured.precision,
            expected(&case, "precision"),
        );
        assert_close(
            "report fractured recall",
            i,
            fractured.recall,
            expected(&case, "recall"),
        );
        assert_close(
            "report fractured f1",
            i,
            fractured.f1,
            expected(&case, "f1"),
        );
        assert_close(
            "report not_fractured recall",
            i,
            cr.classes[1].recall,
            expected(&case, "specificity"),
        );
        assert_close(
            "report accuracy",
            i,
            cr.accuracy,
            expected(&case, "accuracy"),
        );
    }
}
