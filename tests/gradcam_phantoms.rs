//! Grad-CAM points at the fracture: the phantom model, trained here on 480 phantoms for six
//! short epochs (about 20 s of CPU time), whose heatmap peaks must fall near the recorded
//! fracture lines far more often than chance.
//!
//! The full-size figure (the default 12-epoch phantom model, >= 80 % target) comes from
//! `cargo run --release --example 05_gradcam` and is stated in docs/GRADCAM.md; this test keeps
//! the machinery honest in CI time: a wrong coordinate convention, a transposed map or a wrong
//! gradient sign would bring the hit rate down to chance (about 6 %). Measured: the default
//! fused heatmap hits 65.0 % of the 60 fractured test phantoms, the last stage alone 20.0 %.

use fracture_nn::data::phantom::PhantomConfig;
use fracture_nn::data::{standardise, Split, FRACTURED};
use fracture_nn::gradcam::{distance_to_fracture, GradCam};
use fracture_nn::{FitInputs, ModelConfig, TrainConfig, Trainer};

#[test]
fn heatmap_peaks_of_a_quickly_trained_phantom_model_fall_on_the_fracture() {
    let size = 64;
    let mut data = PhantomConfig {
        size,
        train: 480,
        val: 96,
        test: 0,
        seed: 0,
        ..Default::default()
    }
    .folder()
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 6,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let (train, val) = (
        data.take_split(Split::Train).unwrap(),
        data.take_split(Split::Val).unwrap(),
    );
    let out = Trainer::new(config, dir.path())
        .fit(FitInputs::new(ModelConfig::phantom(size), train, val).with_data("phantoms"))
        .unwrap();
    let trained_in = started.elapsed().as_secs_f64();
    let clf = out.classifier;

    // Fractured phantoms of a test split the model never saw.
    let set = PhantomConfig {
        size,
        train: 0,
        val: 0,
        test: 120,
        seed: 5,
        ..Default::default()
    }
    .split(Split::Test)
    .unwrap();
    let fractured: Vec<usize> = (0..set.data.len())
        .filter(|&i| set.data.labels()[i] == FRACTURED)
        .collect();
    let pixels: Vec<f32> = fractured
        .iter()
        .flat_map(|&i| standardise(set.data.image(i), &clf.meta.normalization))
        .collect();
    let tolerance = 0.1 * size as f32;
    let hit_rate = |targets: &[&str]| {
        let mut cam = GradCam::with_targets(&clf, targets).unwrap();
        let maps = cam.heatmap_batch(&pixels, fractured.len()).unwrap();
        let hits = maps
            .iter()
            .zip(&fractured)
            .filter(|(h, &i)| {
                let line = set.fractures[i].unwrap();
                h.peak_point()
                    .is_some_and(|p| distance_to_fracture(p, &line) <= tolerance)
            })
            .count();
        hits as f64 / fractured.len() as f64
    };
    let defaults = GradCam::default_targets(&clf.meta.model);
    let defaults: Vec<&str> = defaults.iter().map(String::as_str).collect();
    let fused = hit_rate(&defaults);
    let deepest = hit_rate(&defaults[..1]);
    println!(
        "trained in {trained_in:.0} s (val ROC-AUC {:?}); {} fractured test phantoms: default fused heatmap hit rate {:.1} %, {} alone {:.1} % (a hit: peak within {tolerance} px of the line; chance about 6 %)",
        out.report.val.roc_auc,
        fractured.len(),
        100.0 * fused,
        defaults[0],
        100.0 * deepest
    );
    assert!(
        fused >= 0.5,
        "default heatmap peaks hit the fracture in only {:.1} % of images",
        100.0 * fused
    );
}
