//! `fracture audit`, `fracture split` and the exact-copy warning of `fracture train`, end to end
//! on small phantom folders with planted copies.

mod support;

use std::path::Path;

use support::{fracture, text};

/// `fracture synth` into `dir` (12 train, 4 val, 4 test per class at 48 px).
fn synth(dir: &Path) {
    let out = fracture(&[
        "synth",
        "--out",
        dir.to_str().unwrap(),
        "--per-class",
        "12",
        "--size",
        "48",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The first file of `dir`, sorted.
fn first_file(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files[0].clone()
}

#[test]
fn audit_json_counts_a_planted_copy_and_train_warns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let clean = fracture(&[
        "audit",
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--quiet",
    ]);
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&clean.stdout)).unwrap();
    assert_eq!(v["clean"], true, "{v}");

    // One train picture copied into test, and one mirrored into val.
    let src = first_file(&data.join("train/fractured"));
    std::fs::copy(&src, data.join("test/fractured/leak.png")).unwrap();
    let img = image::open(&src).unwrap().to_luma8();
    image::imageops::flip_horizontal(&img)
        .save(data.join("val/fractured/mirror.png"))
        .unwrap();
    let out = fracture(&[
        "audit",
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--quiet",
        "--fail-on-leak",
    ]);
    assert!(!out.status.success(), "--fail-on-leak must fail on a leak");
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let pairs = v["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 9);
    let count = |split: &str, inn: &str| {
        let p = pairs
            .iter()
            .find(|p| p["split"] == split && p["in"] == inn)
            .unwrap_or_else(|| panic!("no pair {split} in {inn}: {v}"));
        (
            p["exact_files"].as_u64().unwrap(),
            p["near_files"].as_u64().unwrap(),
        )
    };
    assert_eq!(count("test", "train"), (1, 1));
    assert_eq!(count("val", "train"), (0, 1));
    assert_eq!(count("train", "test"), (1, 1));
    assert_eq!(count("train", "train"), (0, 0));
    assert_eq!(v["groups"].as_array().unwrap().len(), 1);
    assert!(
        v["verdict"][0]
            .as_str()
            .unwrap()
            .contains("leaked from train"),
        "{v}"
    );

    // Text output says the same.
    let out = fracture(&["audit", "--data", data.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("verdict: test is"),
        "{}",
        text(&out.stdout)
    );

    // train warns about the exact copy in test (not the mirrored one: that needs the audit).
    let run = dir.path().join("run");
    let out = support::train_tiny(&data, &run, 1, &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: 1 of 5 test images are exact copies of train images"),
        "{err}"
    );
    assert!(!err.contains("val images are exact copies"), "{err}");
}

#[test]
fn split_writes_a_seeded_manifest_and_refuses_a_full_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let from = data.join("train");
    let split = |out: &str, seed: &str, extra: &[&str]| {
        let out_dir = dir.path().join(out);
        let mut args = vec![
            "split",
            "--from",
            from.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--val",
            "0.25",
            "--test",
            "0.25",
            "--seed",
            seed,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        (fracture(&args), out_dir)
    };
    let (a, out_a) = split("a", "3", &[]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let stdout = text(&a.stdout);
    let test_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("test"))
        .unwrap();
    assert!(
        test_line.ends_with(" 6 files (fractured 3, not_fractured 3)"),
        "{stdout}"
    );
    let (b, out_b) = split("b", "3", &["--copy"]);
    assert!(b.status.success(), "{}", text(&b.stderr));
    let manifest = |d: &Path| std::fs::read_to_string(d.join("manifest.csv")).unwrap();
    assert_eq!(manifest(&out_a), manifest(&out_b));
    assert!(std::fs::symlink_metadata(out_a.join("train/fractured")).is_ok());

    // Non-empty output: refused, then replaced with --overwrite.
    let (again, _) = split("a", "4", &[]);
    assert!(!again.status.success());
    let err = text(&again.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("not empty") && err.contains("--overwrite"),
        "{err}"
    );
    let (over, _) = split("a", "4", &["--overwrite"]);
    assert!(over.status.success(), "{}", text(&over.stderr));
    // Something else in the folder: never deleted.
    std::fs::write(out_a.join("notes.txt"), "mine").unwrap();
    let (refused, _) = split("a", "4", &["--overwrite"]);
    assert!(!refused.status.success());
    assert!(out_a.join("notes.txt").exists());

    // Bad fractions: one clear error.
    let out_c = dir.path().join("c");
    let bad = fracture(&[
        "split",
        "--from",
        from.to_str().unwrap(),
        "--out",
        out_c.to_str().unwrap(),
        "--val",
        "0.6",
        "--test",
        "0.5",
    ]);
    assert!(
        !out_c.exists(),
        "nothing is written before the arguments are checked"
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("--val / --test"),
        "{}",
        text(&bad.stderr)
    );
}
