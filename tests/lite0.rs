//! EfficientNet-Lite0 end to end on small phantoms: fine-tuned from a pretrained model file,
//! killed after one epoch and resumed to the same weights as an uninterrupted run, then loaded,
//! evaluated and explained by Grad-CAM at its last feature map. Needs no `../shared`: the
//! "pretrained" file is a Lite0 built from another seed and saved as `fracture import` would.

mod common;

use std::path::Path;

use fracture_nn::data::Split;
use fracture_nn::layers::Layer;
use fracture_nn::{
    evaluate_split, Classifier, ClassifierMeta, FitInputs, GradCam, ModelConfig, TrainConfig,
    Trainer,
};

/// How the ImageNet EfficientNet-Lite weights standardise their input: `(x - 0.5) / 0.5`.
const IMAGENET_NORMALIZATION: fracture_nn::data::Normalization = fracture_nn::data::Normalization {
    mean: 0.5,
    std: 0.5,
};

const SIZE: usize = 32;

fn model() -> ModelConfig {
    ModelConfig::lite0(SIZE)
}

/// A Lite0 model file with weights from seed 99, standing in for imported ImageNet weights.
fn pretrained(dir: &Path) -> std::path::PathBuf {
    let meta = ClassifierMeta::new(model(), IMAGENET_NORMALIZATION);
    let clf = Classifier::new(meta, 99).unwrap();
    let path = dir.join("pretrained.safetensors");
    clf.save(&path).unwrap();
    path
}

fn run(
    dir: &Path,
    init: &Path,
    stop_after: Option<usize>,
    resume: bool,
) -> fracture_nn::TrainOutcome {
    let mut data = common::phantoms(SIZE, 48, 5);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 16,
        backbone_lr_scale: 0.5,
        seed: 3,
        ..Default::default()
    };
    let mut trainer = Trainer::new(cfg, dir);
    trainer.stop_after = stop_after;
    trainer.init = Some(init.to_path_buf());
    trainer
        .fit(
            FitInputs::new(
                model(),
                data.take_split(Split::Train).unwrap(),
                data.take_split(Split::Val).unwrap(),
            )
            .with_optional_test(data.take_split(Split::Test).ok())
            .with_data("phantoms")
            .resuming(resume),
        )
        .unwrap()
}

#[test]
fn lite0_fine_tunes_resumes_evaluates_and_explains() {
    let tmp = tempfile::tempdir().unwrap();
    let init = pretrained(tmp.path());
    let (full, split) = (tmp.path().join("full"), tmp.path().join("split"));
    let out = run(&full, &init, None, false);
    run(&split, &init, Some(1), false);
    run(&split, &init, None, true);
    let a = common::tensors(&full.join("last.safetensors"), &model());
    let b = common::tensors(&split.join("last.safetensors"), &model());
    assert_eq!(
        a, b,
        "killed after one epoch and resumed, the weights must be those of one run"
    );

    // The backbone started from the file: the first block's depthwise weights moved from the
    // pretrained values, but not far (two epochs at half the rate).
    let start = Classifier::load(&init).unwrap();
    let mut clf = Classifier::load(&full.join("model.safetensors")).unwrap();
    assert_eq!(clf.meta.normalization, IMAGENET_NORMALIZATION);
    let name = "_blocks.0._depthwise_conv.weight";
    let (w0, w1) = (start.net.param(name).unwrap(), clf.net.param(name).unwrap());
    assert_ne!(w0.value, w1.value);
    let moved: f32 = w0
        .value
        .as_slice()
        .iter()
        .zip(w1.value.as_slice())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        moved < 0.5,
        "the pretrained weights were overwritten (max change {moved})"
    );

    // Evaluation through the saved file gives the run's own validation figures.
    let mut data = common::phantoms(SIZE, 48, 5);
    let val = data.take_split(Split::Val).unwrap();
    let ev = evaluate_split(&mut clf.net, val, clf.meta.normalization, 5, clf.meta.tta).unwrap();
    assert_eq!(ev.auc(), out.report.val.roc_auc);

    // Grad-CAM reads the head's feature map (1 x 1 at 32 px), on the model's own layers.
    assert_eq!(GradCam::default_targets(&clf.meta.model), ["_bn1"]);
    let mut cam = GradCam::new(&clf).unwrap();
    let heat = cam.heatmap(&vec![0.1; SIZE * SIZE]).unwrap();
    assert_eq!((heat.width, heat.height), (SIZE, SIZE));
    // Every block is a layer of the chain Grad-CAM runs, by its state-dict path.
    let names = cam.layer_names();
    assert!(names.contains(&"_blocks.0".to_string()) && names.contains(&"_blocks.15".to_string()));
}
