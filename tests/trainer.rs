//! Trainer tests on small phantoms: train -> save -> load -> eval gives the same figures,
//! kill-and-resume reaches the same weights as an uninterrupted run, the same seed gives the
//! same weights, and a diverging run stops with a clear error without touching earlier files.

mod common;

use std::path::Path;

use fracture_nn::data::{ImageFolder, Split};
use fracture_nn::layers::checkpoint;
use fracture_nn::metrics::BinaryReport;
use fracture_nn::{
    evaluate_split, Classifier, Error, FitInputs, ModelConfig, OptimizerKind, TrainConfig, Trainer,
    Tta,
};

const SIZE: usize = 32;

fn phantoms() -> ImageFolder {
    common::phantoms(SIZE, 96, 5)
}

fn model() -> ModelConfig {
    ModelConfig::phantom(SIZE).with_arch(fracture_nn::model::PlainNet::new(&[8, 16]))
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        seed: 11,
        ..Default::default()
    }
}

fn run(
    dir: &Path,
    cfg: TrainConfig,
    stop_after: Option<usize>,
    resume: bool,
) -> fracture_nn::Result<fracture_nn::TrainOutcome> {
    let mut data = phantoms();
    let mut trainer = Trainer::new(cfg, dir);
    trainer.stop_after = stop_after;
    trainer.fit(
        FitInputs::new(
            model(),
            data.take_split(Split::Train)?,
            data.take_split(Split::Val)?,
        )
        .with_optional_test(data.take_split(Split::Test).ok())
        .with_data("phantoms")
        .resuming(resume),
    )
}

/// Every parameter and buffer of a checkpoint, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    common::tensors(path, &model())
}

#[test]
fn train_save_load_eval_gives_the_same_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), config(2), None, false).unwrap();
    for f in [
        "model.safetensors",
        "last.safetensors",
        "last.optim.safetensors",
        "metrics.csv",
        "curves.png",
        "report.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "header + one row per epoch:\n{csv}");

    let mut clf = Classifier::load(&dir.path().join("model.safetensors")).unwrap();
    assert_eq!(clf.meta.threshold, out.report.operating_point.threshold);
    let mut data = phantoms();
    let val = data.take_split(Split::Val).unwrap();
    let ev = evaluate_split(&mut clf.net, val, clf.meta.normalization, 7, clf.meta.tta).unwrap();
    let again = BinaryReport::new(&ev.positives(), &ev.scores, clf.meta.threshold).unwrap();
    assert_eq!(again, out.report.val);
    let test = data.take_split(Split::Test).unwrap();
    let ev = evaluate_split(&mut clf.net, test, clf.meta.normalization, 32, clf.meta.tta).unwrap();
    let again = BinaryReport::new(&ev.positives(), &ev.scores, clf.meta.threshold).unwrap();
    assert_eq!(Some(again), out.report.test);

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["epochs_run"], 2);
    assert!(report["val"]["roc_auc"].is_number());

    // Both test-time augmentations were scored on val and the saved one has the higher AUC.
    let tried = &out.report.tta_val_auc;
    assert_eq!(tried.len(), 2);
    let best = tried
        .iter()
        .map(|(_, a)| a.unwrap())
        .fold(f64::NEG_INFINITY, f64::max);
    let saved = tried.iter().find(|(t, _)| *t == clf.meta.tta).unwrap().1;
    assert_eq!(saved, Some(best));
    assert_eq!(out.report.tta, clf.meta.tta);
    assert_eq!(out.report.val.roc_auc, Some(best));
}

#[test]
fn weight_ema_run_resumes_to_the_same_average() {
    let cfg = TrainConfig {
        ema_decay: Some(0.9),
        tta: Some(Tta::HFlip),
        ..config(3)
    };
    let full = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    let out = run(full.path(), cfg.clone(), None, false).unwrap();
    assert_eq!(out.report.tta, Tta::HFlip);
    assert_eq!(out.report.tta_val_auc.len(), 1);
    run(split.path(), cfg.clone(), Some(1), false).unwrap();
    run(split.path(), cfg, None, true).unwrap();
    for f in [
        "last.safetensors",
        "last.ema.safetensors",
        "model.safetensors",
    ] {
        assert_eq!(
            tensors(&full.path().join(f)),
            tensors(&split.path().join(f)),
            "{f}"
        );
    }
    // The saved model is the average, not the live weights.
    assert_ne!(
        tensors(&full.path().join("last.ema.safetensors")),
        tensors(&full.path().join("last.safetensors"))
    );
    // Resuming without the average's file is refused with the path in the message.
    std::fs::remove_file(split.path().join("last.ema.safetensors")).unwrap();
    let cfg = TrainConfig {
        ema_decay: Some(0.9),
        tta: Some(Tta::HFlip),
        ..config(4)
    };
    let err = run(split.path(), cfg, None, true).unwrap_err().to_string();
    assert!(err.contains("last.ema.safetensors"), "{err}");
}

#[test]
fn kill_and_resume_reaches_the_same_weights() {
    let full = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    run(full.path(), config(3), None, false).unwrap();
    // "Killed" after one epoch: only the state of epoch 1 is on disk.
    run(split.path(), config(3), Some(1), false).unwrap();
    let meta = checkpoint::read_metadata(split.path().join("last.safetensors")).unwrap();
    assert!(meta["fracture_nn_run"].contains("\"epochs_done\":1"));
    let resumed = run(split.path(), config(3), None, true).unwrap();
    assert_eq!(resumed.history.len(), 3);
    assert_eq!(
        tensors(&full.path().join("last.safetensors")),
        tensors(&split.path().join("last.safetensors"))
    );
    assert_eq!(
        tensors(&full.path().join("model.safetensors")),
        tensors(&split.path().join("model.safetensors"))
    );
    let a = checkpoint::load_optimizer_state(full.path().join("last.optim.safetensors")).unwrap();
    let b = checkpoint::load_optimizer_state(split.path().join("last.optim.safetensors")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn resume_refuses_other_settings_and_missing_state() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(dir.path(), config(2), None, true).unwrap_err();
    assert!(matches!(err, Error::Resume { .. }), "{err}");
    run(dir.path(), config(2), Some(1), false).unwrap();
    let other = TrainConfig {
        lr: 0.5,
        ..config(2)
    };
    let err = run(dir.path(), other, None, true).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}

#[test]
fn same_seed_same_weights() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        optimizer: OptimizerKind::Sgd,
        lr: 0.05,
        ..config(1)
    };
    run(a.path(), cfg.clone(), None, false).unwrap();
    run(b.path(), cfg, None, false).unwrap();
    assert_eq!(
        tensors(&a.path().join("last.safetensors")),
        tensors(&b.path().join("last.safetensors"))
    );
}

#[test]
fn diverging_run_stops_with_a_clear_error_and_keeps_earlier_files() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), config(1), None, false).unwrap();
    let before = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let wild = TrainConfig {
        optimizer: OptimizerKind::Sgd,
        lr: 1e30,
        grad_clip: None,
        warmup_epochs: 0,
        ..config(3)
    };
    let err = run(dir.path(), wild, None, false).unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { .. }), "{err}");
    // Epoch 1 of this run diverged: it saved nothing (the files are an earlier run's).
    assert!(
        err.to_string().contains("no epoch of this run finished"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        before
    );
}

#[test]
fn wrong_image_size_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = phantoms();
    let err = Trainer::new(config(1), dir.path())
        .fit(
            FitInputs::new(
                ModelConfig::phantom(64),
                data.take_split(Split::Train).unwrap(),
                data.take_split(Split::Val).unwrap(),
            )
            .with_data("phantoms"),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("32 px but the model expects 64 px"),
        "{err}"
    );
}
