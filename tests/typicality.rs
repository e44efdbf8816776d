//! The typicality bank end to end on phantoms: filled at the end of a run from training
//! images, its scores are the k-NN formula on the pooled features, it survives a save and
//! load, a run started from a file with one fills a new one, the ONNX export gives the same
//! scores (tract), and files without one cannot judge.

mod common;

use fracture_nn::data::Split;
use fracture_nn::layers::Layer;
use fracture_nn::layers::{Mode, Sequential};
use fracture_nn::tensor::Tensor4;
use fracture_nn::typicality::{bank_of, knn_score};
use fracture_nn::{Classifier, ClassifierMeta, FitInputs, ModelConfig, TrainConfig, Trainer};
use prost::Message;
use tract_onnx::prelude::*;

const SIZE: usize = 32;

/// The classifier's input (the output of `pool`) for a batch, in eval mode.
fn pooled(net: &mut Sequential, x: &Tensor4) -> Tensor4 {
    let mut h = x.clone();
    for (name, layer) in net.layers_mut() {
        h = layer.forward_owned(h, Mode::Eval).unwrap();
        if name == "pool" {
            return h;
        }
    }
    panic!("no pool layer")
}

fn train(dir: &std::path::Path, init: Option<&std::path::Path>, seed: u64) -> Classifier {
    let mut data = common::phantoms(SIZE, 60, 2);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 16,
        seed,
        ..Default::default()
    };
    let mut trainer = Trainer::new(cfg, dir);
    trainer.init = init.map(|p| p.to_path_buf());
    trainer
        .fit(
            FitInputs::new(
                ModelConfig::phantom(SIZE),
                data.take_split(Split::Train).unwrap(),
                data.take_split(Split::Val).unwrap(),
            )
            .with_data("phantoms"),
        )
        .unwrap();
    Classifier::load(&dir.join("model.safetensors")).unwrap()
}

fn test_images(clf: &Classifier, n: usize) -> Tensor4 {
    let mut data = common::phantoms(SIZE, 60, 2);
    let test = data.take_split(Split::Test).unwrap();
    let x: Vec<f32> = (0..n)
        .flat_map(|i| {
            test.image(i)
                .iter()
                .map(|&p| clf.meta.normalization.apply(p))
                .collect::<Vec<_>>()
        })
        .collect();
    Tensor4::from_vec([n, 1, SIZE, SIZE], x).unwrap()
}

#[test]
fn the_bank_is_filled_scored_saved_refilled_and_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut clf = train(&tmp.path().join("a"), None, 0);
    let cfg = clf
        .meta
        .model
        .typicality
        .clone()
        .expect("a run fills a typicality bank");
    assert_eq!((cfg.references, cfg.features, cfg.k), (60, 64, 10));
    assert!(cfg.q95 <= cfg.q99 && cfg.q99 < 2.0);
    assert!(clf.meta.model.describe().contains("plain CNN"));

    // Scores are the k-NN formula on the pooled features.
    let x = test_images(&clf, 8);
    clf.predict_tensor(&x).unwrap();
    let judged = clf.last_typicality().expect("a model with a bank judges");
    let feats = pooled(&mut clf.net, &x);
    let bank = bank_of(&clf.net).unwrap();
    assert!(!cfg.mean_std && cfg.path == "typicality");
    for (i, f) in feats.as_slice().chunks_exact(64).enumerate() {
        let want = knn_score(bank.reference(), 64, f, cfg.k);
        assert!(
            (judged[i].score - want).abs() < 1e-6,
            "{} vs {want}",
            judged[i].score
        );
        assert_eq!(judged[i].typical, want <= cfg.q99);
    }
    // Most held-out phantoms are typical of the training phantoms.
    assert!(
        judged.iter().filter(|t| t.typical).count() >= 6,
        "{judged:?}"
    );

    // Saved and loaded, the bank and its scores are the same.
    let path = tmp.path().join("a/model.safetensors");
    let mut again = Classifier::load(&path).unwrap();
    again.predict_tensor(&x).unwrap();
    assert_eq!(again.last_typicality().unwrap(), judged);

    // The ONNX export gives the same scores as its `typicality` output.
    let bytes = fracture_nn::onnx::export(&clf).unwrap().encode_to_vec();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input =
        tract_ndarray::Array4::from_shape_vec((8, 1, SIZE, SIZE), x.as_slice().to_vec()).unwrap();
    let out = plan.run(tvec!(Tensor::from(input).into_tvalue())).unwrap();
    let got: Vec<f32> = out
        .last()
        .unwrap()
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!(got.len(), 8);
    for (g, t) in got.iter().zip(&judged) {
        assert!((g - t.score).abs() < 1e-4, "onnx {g} vs engine {}", t.score);
    }

    // A run started from this file trains without the bank and fills a new one from its own
    // weights: nothing stale is carried.
    let b = train(&tmp.path().join("b"), Some(&path), 1);
    let cfg_b = b.meta.model.typicality.clone().unwrap();
    let reference = |c: &Classifier| c.net.buffer("typicality.reference").unwrap().value.clone();
    assert_ne!(reference(&b), reference(&clf));
    assert_ne!(cfg_b.q99, cfg.q99);
}

#[test]
fn a_model_without_a_bank_cannot_judge() {
    let meta = ClassifierMeta::new(
        ModelConfig::phantom(SIZE),
        fracture_nn::data::Normalization {
            mean: 0.5,
            std: 0.25,
        },
    );
    let mut clf = Classifier::new(meta, 0).unwrap();
    clf.predict_tensor(&Tensor4::zeros([2, 1, SIZE, SIZE]))
        .unwrap();
    assert!(clf.last_typicality().is_none());
    let record = fracture_nn::typicality::record(None);
    assert!(
        record["typical"].is_null() && record["note"].as_str().unwrap().contains("cannot judge")
    );
}
