//! The FracAtlas model committed in `models/fracatlas.safetensors` (what `fracture predict` and
//! `fracture eval` are documented to use) loads, describes itself consistently and predicts.
//! Its accuracy is reported in `docs/RESULTS.md` by a command, not asserted here: scoring 588
//! radiographs belongs in a release build, not in the test suite.

use std::path::PathBuf;

use fracture_nn::data::Normalization;
use fracture_nn::layers::Layer;
use fracture_nn::{BlockKind, Classifier};

fn model_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(file)
}

/// The default model (`models/fracatlas.safetensors`): EfficientNet-Lite0 fine-tuned with a
/// box-mask head, whose map is its heatmap, and a typicality bank, so that it can say when an
/// image is unlike its training X-rays.
#[test]
fn the_committed_fracatlas_model_loads_and_predicts_a_probability() {
    let clf = check(
        "fracatlas.safetensors",
        BlockKind::EfficientNetLite(fracture_nn::model::LiteVariant::Lite0),
    );
    assert_eq!(
        Some(clf.meta.normalization),
        clf.meta.model.backbone().pretrained_normalization()
    );
    assert!(clf.meta.model.mask_head);
    let bank = clf
        .meta
        .model
        .typicality
        .as_ref()
        .expect("a typicality bank");
    assert!(bank.q95 > 0.0 && bank.q99 >= bank.q95, "{bank:?}");
}

/// The first fine-tuned EfficientNet-Lite0 (`models/fracatlas-v1.safetensors`, the default
/// model until the box-mask model replaced it): no mask head, no typicality bank.
#[test]
fn the_first_fine_tuned_model_still_loads_and_predicts() {
    let clf = check(
        "fracatlas-v1.safetensors",
        BlockKind::EfficientNetLite(fracture_nn::model::LiteVariant::Lite0),
    );
    assert!(!clf.meta.model.mask_head && clf.meta.model.typicality.is_none());
}

/// The from-scratch residual network (`models/fracatlas-scratch.safetensors`).
#[test]
fn the_from_scratch_fracatlas_model_still_loads_and_predicts() {
    check("fracatlas-scratch.safetensors", BlockKind::Residual);
}

fn check(file: &str, block: BlockKind) -> Classifier {
    let mut clf = Classifier::load(&model_path(file)).expect("the committed model loads");
    let meta = clf.meta.clone();

    // What docs/RESULTS.md says of it: its architecture on FracAtlas, classes in folder
    // order with fractured as the positive class, a threshold chosen on validation.
    assert_eq!(meta.model.kind(), block);
    assert_eq!(meta.class_names, ["fractured", "not_fractured"]);
    assert_eq!(meta.positive_class, 0);
    assert_eq!(meta.preprocess.image_size, meta.model.image_size);
    assert!(
        meta.threshold > 0.0 && meta.threshold < 1.0,
        "{}",
        meta.threshold
    );
    assert!(
        meta.threshold_rule.contains("sensitivity"),
        "{}",
        meta.threshold_rule
    );
    let prov = &meta.provenance;
    assert!(!prov.data.is_empty() && prov.best_epoch >= 1 && prov.best_epoch <= prov.epochs);
    // The data is named, never located by a path of the machine it was trained on.
    assert!(
        !prov.data.starts_with('/') && !prov.data.contains("/work/"),
        "{}",
        prov.data
    );
    let val_auc = meta.provenance.val_auc.expect("a validation ROC-AUC");
    assert!((0.5..=1.0).contains(&val_auc), "{val_auc}");
    let Normalization { mean, std } = meta.normalization;
    assert!((0.0..1.0).contains(&mean) && std > 0.0, "{mean} {std}");
    assert!(clf.net.num_params() > 100_000);

    // Two inputs (a black and a mid-grey radiograph, standardised) give two probabilities.
    let s = clf.image_size();
    let mut x = vec![(0.0 - mean) / std; s * s];
    x.extend(vec![(0.5 - mean) / std; s * s]);
    let p = clf.predict_batch(&x, 2).unwrap();
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)), "{p:?}");
    clf
}
