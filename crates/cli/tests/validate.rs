//! `fracture validate` on a phantom folder: the report's figures agree with `eval`, the page
//! holds its three plots inline, `--write-model` writes a copy whose threshold and provenance
//! `info` shows, and bad input gets a clear error and leaves no report behind.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{fracture, s, text, tiny_phantom_run};

fn validate(model: &Path, data: &Path, report: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "validate",
        "--model",
        s(model),
        "--data",
        s(data),
        "--report",
        s(report),
        "--resamples",
        "200",
    ];
    args.extend_from_slice(extra);
    fracture(&args)
}

#[test]
fn validate_reports_and_writes_a_model_with_the_local_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model) = tiny_phantom_run(tmp.path());
    let report = tmp.path().join("report");
    let local = tmp.path().join("local.safetensors");
    let out = validate(
        &model,
        &data,
        &report,
        &["--target-sensitivity", "0.8", "--write-model", s(&local)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    let v = &r["validation"];

    // The same figures as eval on the same split.
    let ev = fracture(&["eval", "--model", s(&model), "--data", s(&data), "--json"]);
    assert!(ev.status.success(), "{}", text(&ev.stderr));
    let ev: Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(v["n"], ev["n"]);
    assert!(
        (v["auc"].as_f64().unwrap() - ev["roc_auc"].as_f64().unwrap()).abs() < 1e-12,
        "{v}\n{ev}"
    );
    let m = &v["at_model_threshold"];
    assert!(
        (m["sensitivity"].as_f64().unwrap() - ev["sensitivity"].as_f64().unwrap()).abs() < 1e-12
    );

    // The local threshold reaches the target on this data, and is what the copy holds.
    let l = &v["at_local_threshold"];
    assert!(l["sensitivity"].as_f64().unwrap() >= 0.8, "{l}");
    let t = l["threshold"].as_f64().unwrap();
    let info = fracture(&["info", "--model", s(&local)]);
    let info_text = text(&info.stdout);
    assert!(
        info_text.contains(&format!("threshold      {t:.4}")),
        "{info_text}"
    );
    assert!(
        info_text.contains("set by `fracture validate`"),
        "{info_text}"
    );
    let meta: Value = serde_json::from_str(&text(
        &fracture(&["info", "--model", s(&local), "--json"]).stdout,
    ))
    .unwrap();
    assert_eq!(
        meta["meta"]["provenance"]["local_validation"]["n"], v["n"],
        "{meta}"
    );

    // The page: self-contained, three plots inline, both operating points, the notice.
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 3);
    assert!(html.contains("not a medical device") && html.contains("local threshold"));
    assert!(!html.contains("src=\"http"), "no outside resources");
    // A tiny phantom model trained by this binary carries a typicality check.
    assert!(v["typical_share"].as_f64().is_some(), "{v}");
}

#[test]
fn bad_input_gets_a_clear_error_and_no_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model) = tiny_phantom_run(tmp.path());
    let report = tmp.path().join("report");
    let no_report = |out: &std::process::Output, want: &str| {
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains(want), "expected {want:?} in: {err}");
        assert!(!report.join("report.json").exists() && !report.join("index.html").exists());
    };
    no_report(
        &validate(&model, &data, &report, &["--target-sensitivity", "1.5"]),
        "strictly between 0 and 1",
    );
    no_report(
        &validate(&model, &data, &report, &["--target-sensitivity", "0"]),
        "strictly between 0 and 1",
    );

    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a model").unwrap();
    no_report(&validate(&junk, &data, &report, &[]), "junk.safetensors");

    // A test folder with only one class.
    let one = tmp.path().join("one");
    std::fs::create_dir_all(one.join("test/fractured")).unwrap();
    std::fs::create_dir_all(one.join("test/not_fractured")).unwrap();
    for f in std::fs::read_dir(data.join("test/fractured")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, one.join("test/fractured").join(f.file_name().unwrap())).unwrap();
    }
    let out = validate(&model, &one, &report, &[]);
    assert!(!out.status.success());
    assert!(!report.join("report.json").exists());

    // A metadata file whose paths name no image.
    let meta = tmp.path().join("meta.csv");
    std::fs::write(&meta, "path,site\nelsewhere/x.png,A\n").unwrap();
    no_report(
        &validate(
            &model,
            &data,
            &report,
            &["--meta", s(&meta), "--by", "site"],
        ),
        "none of its paths",
    );

    // The model itself as --write-model.
    no_report(
        &validate(&model, &data, &report, &["--write-model", s(&model)]),
        "would overwrite",
    );
}
