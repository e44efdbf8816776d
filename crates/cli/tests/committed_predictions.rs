//! The committed models predict, to the bit, what they predicted when their probabilities were
//! recorded: `fixtures/committed_predictions.json` holds `fracture predict --json` of the
//! files in `models/` on seeded synthetic phantoms, one thread (the recording was the same with
//! two). `fracatlas-scratch` and `fracatlas-v1` (then named `fracatlas`) were recorded by the
//! release build of commit b831577, before the typed architecture description (both files
//! store the older flat description); `fracatlas` (the box-mask model, the default since) by
//! the test build of the commit that made it the default.
//! A change to how a model file is read or its network built that moves a probability by one
//! ulp fails here.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{fracture, s, text, workspace};

/// How the images were made: `fracture synth --per-class 5 --size 96 --seed 3`, then its
/// `train` split (10 images, both classes).
fn phantoms(dir: &std::path::Path) -> std::path::PathBuf {
    let out = fracture(&[
        "synth",
        "--out",
        s(dir),
        "--per-class",
        "5",
        "--size",
        "96",
        "--seed",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.join("train")
}

#[test]
fn the_committed_models_predict_bit_for_bit_what_they_did_before() {
    let fixture = workspace().join("crates/cli/tests/fixtures/committed_predictions.json");
    let recorded: BTreeMap<String, BTreeMap<String, Value>> =
        serde_json::from_slice(&std::fs::read(&fixture).unwrap()).unwrap();
    let committed = std::fs::read_dir(workspace().join("models"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        })
        .count();
    assert_eq!(
        recorded.len(),
        committed,
        "every committed model is recorded"
    );
    let dir = tempfile::tempdir().unwrap();
    let images = phantoms(dir.path());
    for (model, expected) in &recorded {
        let path = workspace().join("models").join(model);
        let out = fracture(&[
            "predict",
            "--model",
            s(&path),
            "--threads",
            "1",
            "--json",
            s(&images),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut got = BTreeMap::new();
        for line in text(&out.stdout).lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let file = v["path"].as_str().unwrap();
            let rel = file
                .strip_prefix(s(&images))
                .unwrap()
                .trim_start_matches('/');
            got.insert(rel.to_string(), v["p_fractured"].clone());
        }
        assert_eq!(got.len(), 10, "{model}: {got:?}");
        // JSON numbers of the f32 probabilities: equal as f64 means equal bits.
        for (file, p) in expected {
            let (want, have) = (p.as_f64().unwrap(), got[file].as_f64().unwrap());
            assert!(
                want.to_bits() == have.to_bits(),
                "{model} {file}: recorded {want}, now {have}"
            );
        }
        assert_eq!(expected.len(), got.len());
    }
}
