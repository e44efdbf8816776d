//! End-to-end tests of the `fracture` binary on tiny phantoms: every command works, `--json`
//! output has the documented keys, `predict` answers for the good files of a folder holding a
//! corrupt one, and every error path exits non-zero with one line on stderr and no panic.

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::{fracture, phantom_fixture, text};

/// Asserts a failed run: non-zero exit, no panic, and the error as exactly one line starting
/// with `error:` (the last line on stderr; progress notes may precede it) containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "panic: {err}"
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "not one error line: {err}");
    assert_eq!(
        err.trim_end().lines().last(),
        Some(errors[0]),
        "the error is not the last line: {err}"
    );
    assert!(errors[0].starts_with("error: "), "{err}");
    assert!(errors[0].contains(needle), "{needle:?} not in {err}");
}

/// A value outside a flag's closed set is a usage error: exit status 2, clap's message naming
/// the value and listing the possible ones.
fn assert_usage_error(out: &Output, possible: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: invalid value"), "{err}");
    assert!(err.contains(possible), "{possible:?} not in {err}");
}

#[test]
fn eval_json_has_the_documented_keys() {
    let (data, model) = phantom_fixture();
    let out = fracture(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    for k in [
        "n",
        "roc_auc",
        "accuracy",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
        "kappa",
        "threshold",
    ] {
        assert!(v.get(k).is_some(), "key {k} missing in {v}");
    }
    for k in ["tp", "fp", "tn", "fn"] {
        assert!(v["confusion"][k].is_u64(), "confusion.{k} missing in {v}");
    }
    assert_eq!(
        v["n"], 8,
        "synth --per-class 20 gives 40 train, 8 val, 8 test images"
    );
    // The model's own threshold applies unless --threshold is given.
    let out = fracture(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--threshold",
        "0",
    ]);
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["threshold"], 0.0);
    assert_eq!(v["sensitivity"], 1.0);
}

#[test]
fn train_json_prints_the_report_it_writes() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = fracture(&support::tiny_train_args(data, &run, "1", &["--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(printed, written);
    assert_eq!(printed["epochs_run"], 1);
}

#[test]
fn eval_text_report() {
    let (data, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("roc.png");
    let out = fracture(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--split",
        "val",
        "--roc-png",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let roc = image::open(&png).expect("the ROC curve is a readable PNG");
    assert_eq!((roc.width(), roc.height()), (600, 600));
    let s = text(&out.stdout);
    assert!(
        s.contains("fractured") && s.contains("not_fractured") && s.contains("ROC-AUC"),
        "{s}"
    );
}

#[test]
fn predict_answers_for_good_files_when_one_is_corrupt() {
    let (data, model) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let good: Vec<PathBuf> = std::fs::read_dir(data.join("test/fractured"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .take(3)
        .collect();
    for (i, g) in good.iter().enumerate() {
        std::fs::copy(g, dir.path().join(format!("img{i}.png"))).unwrap();
    }
    std::fs::write(
        dir.path().join("broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let out = fracture(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--json",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a failed file makes the exit status non-zero"
    );
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let errors: Vec<_> = lines.iter().filter(|v| v.get("error").is_some()).collect();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["path"].as_str().unwrap().ends_with("broken.png"));
    for v in lines.iter().filter(|v| v.get("error").is_none()) {
        let p = v["p_fractured"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert!(["fractured", "not_fractured"].contains(&v["label"].as_str().unwrap()));
        assert!(v["path"].is_string());
    }
    // Text mode: one line per good image, the error on stderr.
    let out = fracture(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(text(&out.stdout).lines().count(), 3);
    assert!(text(&out.stderr).contains("broken.png"));
    // --bad-files fail: stop at the bad file (sorted first), one error line naming it.
    let out = fracture(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--bad-files",
        "fail",
        dir.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "broken.png");
    assert_eq!(
        text(&out.stdout).lines().count(),
        0,
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn predict_heatmap_writes_one_overlay_png_per_image_with_its_peak() {
    let (data, model) = phantom_fixture();
    let images = tempfile::tempdir().unwrap();
    for (i, e) in std::fs::read_dir(data.join("test/fractured"))
        .unwrap()
        .take(2)
        .enumerate()
    {
        std::fs::copy(
            e.unwrap().path(),
            images.path().join(format!("scan{i}.png")),
        )
        .unwrap();
    }
    let maps = tempfile::tempdir().unwrap();
    let out = fracture(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "--heatmap",
        maps.path().to_str().unwrap(),
        images.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, v) in lines.iter().enumerate() {
        let png = PathBuf::from(v["heatmap"].as_str().expect("a heatmap path"));
        assert_eq!(png, maps.path().join(format!("scan{i}.gradcam.png")));
        let img = image::open(&png).expect("the overlay is a readable PNG");
        // Two 32 px panels side by side at least: the input, and the input with the heatmap.
        assert!(img.width() >= 2 * 32 && img.height() >= 32, "{png:?}");
        // The peak is null (a flat map) or a pixel of the 32 x 32 input.
        if !v["peak"].is_null() {
            let peak: Vec<u64> = serde_json::from_value(v["peak"].clone()).unwrap();
            assert!(peak.len() == 2 && peak[0] < 32 && peak[1] < 32, "{peak:?}");
        }
    }
    // A heatmap directory that cannot be created is one error line, not a panic.
    let blocker = maps.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    assert_one_line_error(
        &fracture(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--heatmap",
            blocker.join("sub").to_str().unwrap(),
            images.path().to_str().unwrap(),
        ]),
        "file",
    );
}

#[test]
fn info_describes_the_model() {
    let (_, model) = phantom_fixture();
    let out = fracture(&["info", "--model", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("parameters") && s.contains("32 x 32 px") && s.contains("threshold"),
        "{s}"
    );
    assert!(
        s.contains("head           global average pooling") && s.contains("augmentation off"),
        "{s}"
    );
    // --json: the metadata as the model file holds it, the parameter count and the layer table.
    let out = fracture(&["info", "--model", model.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["meta"]["model"]["image_size"], 32);
    assert!(v["meta"]["threshold"].as_f64().is_some());
    assert!(v["parameters"].as_u64().unwrap() > 0);
    let layers = v["layers"].as_array().unwrap();
    let last = layers.last().unwrap();
    assert_eq!(last["output"], serde_json::json!([1, 2, 1, 1]), "{last}");
    // Composites are opened into their rows, so the rows add up to the whole network.
    let table_params: u64 = layers.iter().map(|l| l["params"].as_u64().unwrap()).sum();
    assert_eq!(table_params, v["parameters"].as_u64().unwrap());
}

/// `train --members 2` writes both member runs and one model that `info`, `eval` and
/// `predict --heatmap` take like any other.
#[test]
fn an_ensemble_trains_and_serves_like_one_model() {
    let (data, _) = phantom_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("pair");
    let out = fracture(&support::tiny_train_args(
        data,
        &run,
        "1",
        &["--members", "2", "--threads", "2"],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in ["member-0/model.safetensors", "member-1/model.safetensors"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let model = run.join("model.safetensors");
    let m = model.to_str().unwrap();
    let info = fracture(&["info", "--model", m]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert!(
        text(&info.stdout).contains("ensemble       2 members"),
        "{}",
        text(&info.stdout)
    );
    let eval = fracture(&[
        "eval",
        "--model",
        m,
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(eval.status.success(), "{}", text(&eval.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&eval.stdout)).unwrap();
    assert!(v["roc_auc"].is_number(), "{v}");
    let heat = dir.path().join("heat");
    let image = data.join("test/fractured");
    let pred = fracture(&[
        "predict",
        "--model",
        m,
        "--json",
        "--heatmap",
        heat.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert!(pred.status.success(), "{}", text(&pred.stderr));
    let lines: Vec<serde_json::Value> = text(&pred.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let p = l["p_fractured"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{l}");
        assert!(
            std::path::Path::new(l["heatmap"].as_str().unwrap()).is_file(),
            "{l}"
        );
    }
    assert_one_line_error(
        &fracture(&[
            "train",
            "--members",
            "0",
            "--epochs",
            "1",
            "--out",
            dir.path().join("none").to_str().unwrap(),
        ]),
        "members",
    );
}

#[test]
fn help_on_every_command() {
    for cmd in ["train", "eval", "predict", "synth", "info"] {
        let out = fracture(&[cmd, "--help"]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Usage"), "{cmd}");
    }
}

#[test]
fn error_paths_exit_non_zero_with_one_line() {
    let (data, model) = phantom_fixture();
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a safetensors file").unwrap();
    let g = garbage.to_str().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let no_data = dir.path().join("no-such-folder");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();

    assert_one_line_error(
        &fracture(&["info", "--model", missing.to_str().unwrap()]),
        "nope.safetensors",
    );
    assert_one_line_error(&fracture(&["info", "--model", g]), "garbage.safetensors");
    assert_one_line_error(
        &fracture(&["eval", "--model", m, "--data", no_data.to_str().unwrap()]),
        "no-such-folder",
    );
    assert_usage_error(
        &fracture(&["eval", "--model", m, "--data", d, "--split", "dev"]),
        "[possible values: train, val, test]",
    );
    assert_one_line_error(
        &fracture(&["eval", "--model", g, "--data", d]),
        "garbage.safetensors",
    );
    assert_one_line_error(
        &fracture(&["predict", "--model", m, "--threshold", "2", d]),
        "--threshold",
    );
    assert_one_line_error(
        &fracture(&["predict", "--model", m, empty.to_str().unwrap()]),
        "no image files",
    );
    assert_one_line_error(
        &fracture(&[
            "train",
            "--data",
            empty.to_str().unwrap(),
            "--out",
            dir.path().join("r").to_str().unwrap(),
        ]),
        "empty",
    );
    assert_usage_error(
        &fracture(&["train", "--optimizer", "rmsprop", "--epochs", "1"]),
        "[possible values: sgd, adamw]",
    );
    assert_usage_error(
        &fracture(&["train", "--arch", "vgg", "--epochs", "1"]),
        "[possible values: plain, residual, efficientnet-lite0, efficientnet-lite1, efficientnet-lite2]",
    );
    assert_usage_error(
        &fracture(&["eval", "--model", m, "--data", d, "--tta", "vflip"]),
        "[possible values: off, hflip]",
    );
    assert_usage_error(
        &fracture(&["predict", "--model", m, "--bad-files", "ignore", d]),
        "[possible values: skip, fail]",
    );
    assert_one_line_error(&fracture(&["train", "--resume"]), "--resume needs --out");
    assert_one_line_error(
        &fracture(&["train", "--arch", "plain", "--stem-pool", "--epochs", "1"]),
        "residual networks only",
    );
    assert_one_line_error(
        &fracture(&[
            "train",
            "--weight-decay=-1",
            "--epochs",
            "1",
            "--out",
            dir.path().join("wd").to_str().unwrap(),
        ]),
        "weight decay",
    );
    assert_one_line_error(
        &fracture(&[
            "train",
            "--label-smoothing",
            "1.5",
            "--epochs",
            "1",
            "--out",
            dir.path().join("ls").to_str().unwrap(),
        ]),
        "label smoothing",
    );
    assert_one_line_error(
        &fracture(&[
            "train",
            "--image-size",
            "8",
            "--epochs",
            "1",
            "--out",
            dir.path().join("s").to_str().unwrap(),
        ]),
        "image size 8",
    );
    assert_one_line_error(
        &fracture(&[
            "train",
            "--resume",
            "--out",
            dir.path().join("fresh").to_str().unwrap(),
            "--epochs",
            "1",
        ]),
        "cannot resume",
    );
    assert_one_line_error(
        &fracture(&[
            "synth",
            "--out",
            dir.path().join("x").to_str().unwrap(),
            "--per-class",
            "0",
        ]),
        "--per-class",
    );
    // A model file whose tensors do not fit the architecture its metadata describes.
    let mut clf = fracture_nn::Classifier::load(model).unwrap();
    let narrower = fracture_nn::model::ArchOverrides {
        widths: Some(vec![8, 32]),
        ..Default::default()
    };
    clf.meta.model.arch = clf.meta.model.arch.with_overrides(&narrower).unwrap();
    let other = dir.path().join("other.safetensors");
    clf.save(&other).unwrap();
    assert_one_line_error(
        &fracture(&["predict", "--model", other.to_str().unwrap(), d]),
        "blocks.1.0.weight",
    );
}
