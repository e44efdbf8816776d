//! Ensembles ([`ModelConfig::members`] > 1) on small phantoms: each member is exactly the
//! single-network run of its seed on its share of the threads, the joined file predicts the
//! softmax of the members' mean logits, a killed ensemble run resumes to the same weights,
//! Grad-CAM explains every member, and the file reads back with its threshold.

mod common;

use std::path::Path;

use fracture_nn::data::{ImageFolder, Split};
use fracture_nn::layers::{softmax, Layer, Mode};
use fracture_nn::tensor::Tensor4;
use fracture_nn::{
    Classifier, FitInputs, GradCam, ModelConfig, TrainConfig, TrainOutcome, Trainer, Tta,
};

const SIZE: usize = 32;

fn phantoms() -> ImageFolder {
    common::phantoms(SIZE, 72, 3)
}

fn single() -> ModelConfig {
    ModelConfig::phantom(SIZE).with_arch(fracture_nn::model::PlainNet::new(&[8, 16]))
}

fn pair() -> ModelConfig {
    ModelConfig {
        members: 2,
        ..single()
    }
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 16,
        seed: 21,
        tta: Some(Tta::Off),
        ..Default::default()
    }
}

/// Trains `model` into `dir` inside a rayon pool of `threads`.
fn run(
    dir: &Path,
    model: &ModelConfig,
    cfg: TrainConfig,
    threads: usize,
    stop_after: Option<usize>,
    resume: bool,
) -> fracture_nn::Result<TrainOutcome> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut data = phantoms();
    let mut trainer = Trainer::new(cfg, dir);
    trainer.stop_after = stop_after;
    pool.install(|| {
        trainer.fit(
            FitInputs::new(
                model.clone(),
                data.take_split(Split::Train)?,
                data.take_split(Split::Val)?,
            )
            .with_optional_test(data.take_split(Split::Test).ok())
            .with_data("phantoms")
            .resuming(resume),
        )
    })
}

fn val_batch() -> Tensor4 {
    let mut data = phantoms();
    let val = data.take_split(Split::Val).unwrap();
    let clf_norm =
        fracture_nn::data::Normalization::from_train(&phantoms().take_split(Split::Train).unwrap())
            .unwrap();
    let n = val.len();
    let pixels: Vec<f32> = (0..n)
        .flat_map(|i| fracture_nn::data::standardise(val.image(i), &clf_norm))
        .collect();
    Tensor4::from_vec([n, 1, SIZE, SIZE], pixels).unwrap()
}

#[test]
fn members_are_the_single_runs_of_their_seeds_and_the_file_averages_their_logits() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &pair(), config(), 2, None, false).unwrap();
    for f in [
        "model.safetensors",
        "report.json",
        "member-0/model.safetensors",
        "member-1/last.safetensors",
        "member-1/metrics.csv",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    // Member 1 is the run of seed 22 on one thread (two threads shared by two members).
    let alone = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        seed: 22,
        ..config()
    };
    run(alone.path(), &single(), cfg, 1, None, false).unwrap();
    let member1 = common::tensors(&dir.path().join("member-1/model.safetensors"), &single());
    assert_eq!(
        member1,
        common::tensors(&alone.path().join("model.safetensors"), &single())
    );
    // The joined file holds both members under members.{i}, without their typicality banks
    // (an ensemble has none).
    let member1: Vec<(String, Vec<f32>)> = member1
        .into_iter()
        .filter(|(n, _)| !n.starts_with("typicality."))
        .collect();
    let joined = common::tensors(&dir.path().join("model.safetensors"), &pair());
    assert_eq!(joined.len(), 2 * member1.len());
    let joined1: Vec<(String, Vec<f32>)> = joined
        .into_iter()
        .filter_map(|(n, v)| Some((n.strip_prefix("members.1.")?.to_string(), v)))
        .collect();
    assert_eq!(joined1, member1);

    // P(fractured) of the ensemble = softmax of the mean of the members' logits.
    let mut clf = Classifier::load(&dir.path().join("model.safetensors")).unwrap();
    assert_eq!(clf.meta.model.members, 2);
    assert_eq!(clf.meta.threshold, out.report.operating_point.threshold);
    let x = val_batch();
    let got = clf.predict_tensor(&x).unwrap();
    let mut mean = Tensor4::zeros([x.shape()[0], 2, 1, 1]);
    for i in 0..2 {
        let mut m =
            Classifier::load(&dir.path().join(format!("member-{i}/model.safetensors"))).unwrap();
        let logits = m.net.forward(&x, Mode::Eval).unwrap();
        for (a, b) in mean.as_slice_mut().iter_mut().zip(logits.as_slice()) {
            *a += b / 2.0;
        }
    }
    let want = softmax(&mean).unwrap();
    for (j, p) in got.iter().enumerate() {
        let w = want.as_slice()[j * 2 + clf.meta.positive_class] as f64;
        assert!((p - w).abs() < 1e-6, "image {j}: {p} vs {w}");
    }

    // report.json lists the members with their own figures.
    assert_eq!(out.report.members.len(), 2);
    assert_eq!(out.report.members[1].seed, 22);
    assert_eq!(
        out.report.members[1].dir,
        dir.path().join("member-1").to_path_buf()
    );
    assert!(out.report.test.is_some());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["members"].as_array().unwrap().len(), 2);
    assert_eq!(report["model"]["members"], 2);
}

#[test]
fn a_killed_ensemble_run_resumes_to_the_same_weights() {
    let full = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    run(full.path(), &pair(), config(), 2, None, false).unwrap();
    run(split.path(), &pair(), config(), 2, Some(1), false).unwrap();
    run(split.path(), &pair(), config(), 2, None, true).unwrap();
    assert_eq!(
        common::tensors(&split.path().join("model.safetensors"), &pair()),
        common::tensors(&full.path().join("model.safetensors"), &pair())
    );
}

#[test]
fn grad_cam_of_an_ensemble_fuses_every_member() {
    let meta = fracture_nn::ClassifierMeta::new(
        pair(),
        fracture_nn::data::Normalization {
            mean: 0.5,
            std: 0.25,
        },
    );
    let clf = Classifier::new(meta, 4).unwrap();
    let mut cam = GradCam::new(&clf).unwrap();
    let targets = cam.targets().len();
    let x = val_batch();
    let one = Tensor4::from_vec([1, 1, SIZE, SIZE], x.as_slice()[..SIZE * SIZE].to_vec()).unwrap();
    let heat = cam.heatmaps(&one).unwrap().remove(0);
    assert_eq!(heat.cams.len(), 2 * targets);
    // Every map carries the ensemble's logits, whose softmax is the classifier's probability.
    let mut clf = clf;
    let p = clf.predict_tensor(&one).unwrap()[0];
    for c in &heat.cams {
        assert!(
            (c.probability() - p).abs() < 1e-5,
            "{} vs {p}",
            c.probability()
        );
    }
    // Member 1's maps are those of member 1 explained on its own.
    let mut lone = Classifier::from_parts(
        ModelConfig::build(&single(), 5).unwrap(),
        fracture_nn::ClassifierMeta::new(single(), clf.meta.normalization),
    );
    lone.meta.positive_class = clf.meta.positive_class;
    let alone = GradCam::new(&lone)
        .unwrap()
        .heatmaps(&one)
        .unwrap()
        .remove(0);
    for (a, b) in heat.cams[targets..].iter().zip(&alone.cams) {
        assert_eq!(a.values, b.values);
    }
}

#[test]
fn ensembles_need_at_least_one_member_and_old_files_read_as_one() {
    let bad = ModelConfig {
        members: 0,
        ..single()
    };
    assert!(bad.build(0).unwrap_err().to_string().contains("members"));
    let mut json = serde_json::to_value(single()).unwrap();
    json.as_object_mut().unwrap().remove("members");
    let back: ModelConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, single());
}
