//! `batch_predict::predict_stream` against one-file-at-a-time prediction: same probabilities
//! under flip TTA and for an ensemble, input order kept, bad files reported in place, and a
//! stream dropped early stops its decode thread.

use std::path::PathBuf;

use fracture_nn::batch_predict::{predict_stream, Input, StreamConfig};
use fracture_nn::data::Normalization;
use fracture_nn::model::PlainNet;
use fracture_nn::{Classifier, ClassifierMeta, ModelConfig, Tta};

/// `n` phantom PNGs of 40 px (resized to the model's 32 px), plus a corrupt file at index 3.
fn files(dir: &std::path::Path, n: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for i in 0..n {
        let path = dir.join(format!("{i:03}.png"));
        if i == 3 {
            std::fs::write(&path, b"\x89PNG\r\n\x1a\ncut").unwrap();
        } else {
            let px = fracture_nn::data::phantom::render(40, i as u64, i % 3 == 0).pixels;
            image::GrayImage::from_raw(40, 40, px)
                .unwrap()
                .save(&path)
                .unwrap();
        }
        out.push(path);
    }
    out
}

fn classifier(tta: Tta, members: usize) -> Classifier {
    let model = ModelConfig {
        members,
        ..ModelConfig::phantom(32).with_arch(PlainNet::new(&[8, 16]))
    };
    let mut meta = ClassifierMeta::new(
        model,
        Normalization {
            mean: 0.4,
            std: 0.2,
        },
    );
    meta.tta = tta;
    Classifier::new(meta, 11).unwrap()
}

#[test]
fn streamed_batches_match_single_files_under_tta_and_for_ensembles() {
    let dir = tempfile::tempdir().unwrap();
    let paths = files(dir.path(), 23);
    for (tta, members) in [(Tta::HFlip, 1), (Tta::Off, 2)] {
        let mut clf = classifier(tta, members);
        let alone: Vec<Option<f64>> = paths.iter().map(|p| clf.predict_file(p).ok()).collect();
        for batch_size in [1, 5, 16] {
            let cfg = StreamConfig {
                batch_size,
                ..StreamConfig::default()
            };
            let got: Vec<_> = predict_stream(&mut clf, paths.clone(), &cfg)
                .unwrap()
                .flat_map(Result::unwrap)
                .collect();
            assert_eq!(got.len(), paths.len());
            for ((s, p), want) in got.iter().zip(&paths).zip(&alone) {
                assert_eq!(&s.path, p, "input order");
                match (&s.outcome, want) {
                    (Ok(sc), Some(w)) => assert!(
                        (sc.p_fractured - w).abs() < 1e-5,
                        "{tta:?} x{members} batch {batch_size}: {} vs {w}",
                        sc.p_fractured
                    ),
                    (Err(e), None) => assert!(e.contains("003.png"), "{e}"),
                    other => panic!("{p:?}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn known_errors_pass_through_and_an_early_drop_stops_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut clf = classifier(Tta::Off, 1);
    // An endless input: only what is consumed (plus the read-ahead) is ever decoded.
    let path = files(dir.path(), 1).remove(0);
    let endless = std::iter::repeat(path.clone()).map(Input::from);
    let cfg = StreamConfig {
        batch_size: 4,
        ..StreamConfig::default()
    };
    let mut stream = predict_stream(&mut clf, endless, &cfg).unwrap();
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first.len(), 4);
    drop(stream); // must return: the decode thread sees the closed channel and stops
    let given = vec![Input {
        path: "folder".into(),
        error: Some("cannot read folder: denied".into()),
    }];
    let got: Vec<_> = predict_stream(&mut clf, given, &cfg)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(
        got[0][0].outcome.as_ref().unwrap_err(),
        "cannot read folder: denied"
    );
    let zero = StreamConfig {
        batch_size: 0,
        ..cfg
    };
    let err = predict_stream(&mut clf, Vec::<PathBuf>::new(), &zero).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}
