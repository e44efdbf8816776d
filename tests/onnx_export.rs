//! The ONNX export (`fracture_nn::onnx`) against the project's own forward pass: every
//! architecture the project builds, exported, run by `tract-onnx` (pure Rust) and by ONNX
//! Runtime through `scripts/onnx_predict.py`, must give the probabilities of
//! [`Classifier::predict_tensor`] within 1e-4 on 20 FracAtlas test images, at batch 1 and 7.
//!
//! The phantom models are seeded random networks whose batch-norm statistics and affine
//! parameters are drawn away from their fresh values (mean 0, variance 1, gamma 1, beta 0), so
//! that folding them into the convolutions is exercised; the committed FracAtlas model is the
//! trained one. FracAtlas comes from `../shared` (skipped with a message when absent, required
//! when `CI` is set). ONNX Runtime runs where `$FRACTURE_ONNX_PYTHON` (default `python3`)
//! imports `onnxruntime`, `numpy` and `PIL` (skipped with a message otherwise, required when
//! `CI` is set: `.ci/run` makes such a venv).

use std::path::{Path, PathBuf};

use fracture_nn::data::{Normalization, PreprocessConfig, ResizeMode};
use fracture_nn::layers::{Layer, Mode};
use fracture_nn::model::{PlainNet, ResNet};
use fracture_nn::onnx::{self, proto::ModelProto};
use fracture_nn::tensor::Tensor4;
use fracture_nn::{Classifier, ClassifierMeta, Head, ModelConfig, Tta};
use fracture_test_support::{shared_dir, unavailable};
use prost::Message;
use rand::{Rng, SeedableRng};
use tract_onnx::prelude::*;

/// Largest difference allowed between two probabilities of the same image.
const PROB_TOL: f32 = 1e-4;
/// Images from FracAtlas's test split: the first half of the fractured ones, then as many
/// intact ones, in sorted file order.
const IMAGES: usize = 20;

/// The 20 FracAtlas test images (10 fractured, 10 not), sorted.
fn fracatlas_images(shared: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for class in ["fractured", "not_fractured"] {
        let dir = shared.join("datasets/fracatlas/test").join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        out.extend(files.into_iter().take(IMAGES / 2));
    }
    assert_eq!(out.len(), IMAGES);
    out
}

/// A seeded random network of `model` with batch-norm state drawn away from its fresh values.
fn random_classifier(model: ModelConfig, tta: Tta, seed: u64) -> Classifier {
    let meta = ClassifierMeta {
        tta,
        threshold: 0.37,
        ..ClassifierMeta::new(
            model,
            Normalization {
                mean: 0.45,
                std: 0.22,
            },
        )
    };
    let mut clf = Classifier::new(meta, seed).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xb17);
    clf.net.visit_buffers("", &mut |name, b| {
        for v in b.value.as_slice_mut() {
            *v = if name.ends_with("running_var") {
                rng.gen_range(0.5..2.0)
            } else {
                rng.gen_range(-0.2..0.2)
            };
        }
    });
    // The 1-D parameters are the batch norms' gamma and beta, and the classifier's bias. The
    // classifier's weights are scaled down so that the probabilities are not all 0 or 1 (a
    // comparison of saturated probabilities would say little).
    for (name, p) in clf.net.named_params_mut() {
        if name.ends_with("fc.weight") {
            p.value.as_slice_mut().iter_mut().for_each(|v| *v *= 0.1);
        }
        if p.torch_shape().len() == 1 && !name.ends_with("fc.bias") {
            let gamma = name.ends_with("weight");
            for v in p.value.as_slice_mut() {
                *v = if gamma {
                    rng.gen_range(0.6..1.4)
                } else {
                    rng.gen_range(-0.2..0.2)
                };
            }
        }
    }
    clf
}

/// The architectures checked: one of each the project builds, small, at 64 px.
fn phantom_models() -> Vec<(&'static str, Classifier)> {
    let s = 64;
    vec![
        (
            "plain",
            random_classifier(
                ModelConfig::phantom(s).with_arch(PlainNet::new(&[8, 16, 16])),
                Tta::Off,
                1,
            ),
        ),
        (
            "residual (stem pool, avg+max head, flip averaging)",
            random_classifier(
                ModelConfig {
                    head: Head::AvgMax,
                    ..ModelConfig::default()
                }
                .with_arch(ResNet::new(&[8, 16], 2).with_stem_pool(true))
                .with_size(s),
                Tta::HFlip,
                2,
            ),
        ),
        (
            "efficientnet-lite0",
            random_classifier(ModelConfig::lite0(s), Tta::Off, 3),
        ),
        (
            "ensemble of 3 plain networks (flip averaging)",
            random_classifier(
                ModelConfig {
                    members: 3,
                    ..ModelConfig::phantom(s).with_arch(PlainNet::new(&[8, 16, 16]))
                },
                Tta::HFlip,
                4,
            ),
        ),
    ]
}

trait WithSize {
    fn with_size(self, s: usize) -> Self;
}

impl WithSize for ModelConfig {
    fn with_size(self, image_size: usize) -> Self {
        ModelConfig { image_size, ..self }
    }
}

fn committed_model() -> Classifier {
    Classifier::load(&PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/fracatlas.safetensors"
    )))
    .expect("the committed model loads")
}

/// The images preprocessed as `clf` does, one `[1, 1, S, S]` input each.
fn inputs(clf: &Classifier, files: &[PathBuf]) -> Vec<Vec<f32>> {
    files
        .iter()
        .map(|f| {
            fracture_nn::data::preprocess_file(f, &clf.meta.preprocess, &clf.meta.normalization)
                .unwrap()
        })
        .collect()
}

/// The project's own probabilities, logits and (for a model with a typicality bank) typicality
/// scores, image by image.
fn reference(clf: &mut Classifier, xs: &[Vec<f32>]) -> (Vec<f32>, Vec<[f32; 2]>, Vec<f32>) {
    let s = clf.image_size();
    let mut probs = Vec::new();
    let mut logits = Vec::new();
    let mut typicality = Vec::new();
    for x in xs {
        let t = Tensor4::from_vec([1, 1, s, s], x.clone()).unwrap();
        probs.push(clf.predict_tensor(&t).unwrap()[0] as f32);
        let l = clf.net.forward(&t, Mode::Eval).unwrap();
        logits.push([l.as_slice()[0], l.as_slice()[1]]);
        // The bank scored the image itself in that last pass (the graph's first view).
        if let Some(t) = clf.last_typicality() {
            typicality.push(t[0].score);
        }
    }
    (probs, logits, typicality)
}

/// Probabilities, logits and typicality scores (the last output, when `typicality`) of the
/// exported graph under tract, in batches of `batch`.
fn run_tract(
    bytes: &[u8],
    xs: &[Vec<f32>],
    s: usize,
    batch: usize,
    typicality: bool,
) -> (Vec<f32>, Vec<[f32; 2]>, Vec<f32>) {
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the exported file")
        .into_optimized()
        .expect("tract optimises the graph")
        .into_runnable()
        .unwrap();
    let mut probs = Vec::new();
    let mut logits = Vec::new();
    let mut scores = Vec::new();
    for chunk in xs.chunks(batch) {
        let data: Vec<f32> = chunk.concat();
        let input = tract_ndarray::Array4::from_shape_vec((chunk.len(), 1, s, s), data).unwrap();
        let out = plan
            .run(tvec!(Tensor::from(input).into_tvalue()))
            .expect("tract runs the graph");
        let p = out[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(p.shape(), [chunk.len()], "p_fractured is [N]");
        probs.extend(p.iter().copied());
        let l = out[1].to_plain_array_view::<f32>().unwrap();
        assert_eq!(l.shape(), [chunk.len(), 2], "logits are [N, 2]");
        logits.extend(l.outer_iter().map(|r| [r[0], r[1]]));
        if typicality {
            let t = out.last().unwrap().to_plain_array_view::<f32>().unwrap();
            assert_eq!(t.shape(), [chunk.len()], "typicality is [N]");
            scores.extend(t.iter().copied());
        }
    }
    (probs, logits, scores)
}

/// Largest absolute difference.
fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_tract(name: &str, clf: &mut Classifier, files: &[PathBuf]) {
    let bytes = onnx::export(clf).unwrap().encode_to_vec();
    let xs = inputs(clf, files);
    let (want_p, want_l, want_t) = reference(clf, &xs);
    let s = clf.image_size();
    let banked = clf.meta.model.typicality.is_some();
    assert_eq!(want_t.len(), if banked { xs.len() } else { 0 });
    for batch in [1, 7] {
        let (p, l, t) = run_tract(&bytes, &xs, s, batch, banked);
        if banked {
            let dt = worst(&t, &want_t);
            eprintln!("{name}, batch {batch}: max |d typicality| = {dt:.2e}");
            assert!(
                dt <= 1e-4,
                "{name}, batch {batch}: typicality differs by {dt}"
            );
        }
        let dp = worst(&p, &want_p);
        let dl = worst(&l.concat(), &want_l.concat());
        let scale = want_l.concat().iter().fold(1.0f32, |m, v| m.max(v.abs()));
        eprintln!("{name}, batch {batch}: max |dp| = {dp:.2e}, max |dlogit| = {dl:.2e} (logits up to {scale:.2})");
        assert!(
            dp <= PROB_TOL,
            "{name}, batch {batch}: probabilities differ by {dp}"
        );
        assert!(
            dl <= 1e-4 * scale,
            "{name}, batch {batch}: logits differ by {dl} (largest {scale})"
        );
    }
    // Not a vacuous comparison: the images get different probabilities.
    let spread = want_p.iter().fold(f32::MIN, |m, &v| m.max(v))
        - want_p.iter().fold(f32::MAX, |m, &v| m.min(v));
    assert!(
        spread > 1e-3,
        "{name}: every image gets about the same probability {want_p:?}"
    );
}

#[test]
fn tract_matches_the_forward_pass_of_every_architecture() {
    let Some(shared) = shared_dir() else { return };
    let files = fracatlas_images(&shared);
    for (name, mut clf) in phantom_models() {
        check_tract(name, &mut clf, &files);
    }
}

#[test]
fn tract_matches_the_committed_fracatlas_model() {
    let Some(shared) = shared_dir() else { return };
    let files = fracatlas_images(&shared);
    let mut clf = committed_model();
    assert_eq!(
        clf.meta.tta,
        Tta::HFlip,
        "the committed model averages flips"
    );
    check_tract("committed fracatlas model", &mut clf, &files);
}

/// The graph's form: opset, IR version, names and shapes, every batch norm folded away, one
/// `Conv` per convolution, the metadata scoring code reads.
#[test]
fn the_graph_declares_its_interface_and_folds_every_batch_norm() {
    let (_, clf) = phantom_models().remove(2); // EfficientNet-Lite0
    let model = onnx::export(&clf).unwrap();
    let model = ModelProto::decode(model.encode_to_vec().as_slice()).unwrap();
    assert_eq!(model.opset_import[0].version, 17);
    assert_eq!(model.ir_version, 8);
    let g = model.graph.as_ref().unwrap();
    let convs = clf
        .net
        .named_params()
        .iter()
        .filter(|(_, p)| p.torch_shape().len() == 4)
        .count();
    let ops = |op: &str| g.node.iter().filter(|n| n.op_type == op).count();
    assert_eq!(ops("Conv"), convs);
    assert_eq!(ops("BatchNormalization"), 0);
    // ReLU6 after the stem and the head, and after _bn0 and _bn1 in each of the 16 blocks
    // but the first (expansion 1: no _expand_conv, no _bn0).
    assert_eq!(ops("Clip"), 2 + 2 * 16 - 1);
    let io: Vec<&str> = g
        .input
        .iter()
        .chain(&g.output)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(io, ["image", "p_fractured", "logits"]);
    let doc = &g.input[0].doc_string;
    assert!(doc.contains("(p / 255 - 0.45) / 0.22"), "{doc}");
    assert!(g.doc_string.contains("(p / 255 - 0.45) / 0.22"));
    let meta = |k: &str| {
        model
            .metadata_props
            .iter()
            .find(|e| e.key == k)
            .unwrap_or_else(|| panic!("no metadata {k}"))
            .value
            .clone()
    };
    assert_eq!(meta("threshold"), "0.37");
    assert_eq!(meta("class_names"), r#"["fractured","not_fractured"]"#);
    assert_eq!(meta("positive_class"), "0");
    assert_eq!(meta("normalization_mean"), "0.45");
    assert_eq!(meta("normalization_std"), "0.22");
    assert_eq!(meta("resize_mode"), "Letterbox");
    let back: ClassifierMeta = serde_json::from_str(&meta("fracture_nn")).unwrap();
    assert_eq!(back, clf.meta);
}

/// A layer the exporter does not know is an error naming it, not a panic or a wrong graph.
#[test]
fn an_unknown_layer_is_an_error_naming_it() {
    #[derive(Debug)]
    struct Mystery;
    impl Layer for Mystery {
        fn kind(&self) -> &'static str {
            "Mystery"
        }
        fn forward(&mut self, x: &Tensor4, _: Mode) -> fracture_nn::layers::Result<Tensor4> {
            Ok(x.clone())
        }
        fn backward(&mut self, dy: &Tensor4) -> fracture_nn::layers::Result<Tensor4> {
            Ok(dy.clone())
        }
    }
    let meta = ClassifierMeta::new(
        ModelConfig::phantom(32),
        Normalization {
            mean: 0.5,
            std: 0.25,
        },
    );
    let mut net = meta.model.build(0).unwrap();
    net.push("odd", Mystery).unwrap();
    let err = onnx::export(&Classifier::from_parts(net, meta)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"odd\"") && msg.contains("Mystery"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// ONNX Runtime through scripts/onnx_predict.py

/// The Python that has onnxruntime, numpy and Pillow, or `None` (skipped) outside CI.
fn python() -> Option<String> {
    let py = std::env::var("FRACTURE_ONNX_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import onnxruntime, numpy, PIL"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(py);
    }
    unavailable(&format!(
        "{py} cannot import onnxruntime, numpy and PIL (set FRACTURE_ONNX_PYTHON)"
    ))
}

/// `scripts/onnx_predict.py --json --batch B` on `files`: path -> (p_fractured, label).
fn run_script(
    py: &str,
    onnx_file: &Path,
    files: &[PathBuf],
    batch: usize,
) -> Vec<(String, f64, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/onnx_predict.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .arg(onnx_file)
        .args(files)
        .args(["--batch", &batch.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "onnx_predict.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                v["p_fractured"].as_f64().unwrap(),
                v["label"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn check_runtime(py: &str, name: &str, clf: &mut Classifier, files: &[PathBuf], dir: &Path) {
    let file = dir.join("model.onnx");
    onnx::write(clf, &file).unwrap();
    let want: Vec<f64> = files.iter().map(|f| clf.predict_file(f).unwrap()).collect();
    for batch in [1, 7] {
        let got = run_script(py, &file, files, batch);
        assert_eq!(got.len(), files.len(), "{name}: one line per image");
        let mut dp = 0.0f64;
        for ((path, p, label), (f, w)) in got.iter().zip(files.iter().zip(&want)) {
            assert_eq!(
                path,
                &f.display().to_string(),
                "{name}: lines in input order"
            );
            assert_eq!(label, clf.label(*w, None), "{name}: {path}");
            dp = dp.max((p - w).abs());
        }
        eprintln!("{name}, onnxruntime batch {batch}: max |dp| = {dp:.2e}");
        assert!(
            dp <= PROB_TOL as f64,
            "{name}, batch {batch}: ONNX Runtime differs by {dp}"
        );
    }
}

#[test]
fn onnx_runtime_matches_the_forward_pass_of_every_architecture() {
    let Some(shared) = shared_dir() else { return };
    let Some(py) = python() else { return };
    let files = fracatlas_images(&shared);
    let dir = tempfile::tempdir().unwrap();
    for (name, mut clf) in phantom_models() {
        check_runtime(&py, name, &mut clf, &files, dir.path());
    }
}

#[test]
fn onnx_runtime_matches_the_committed_fracatlas_model() {
    let Some(shared) = shared_dir() else { return };
    let Some(py) = python() else { return };
    let files = fracatlas_images(&shared);
    let dir = tempfile::tempdir().unwrap();
    check_runtime(
        &py,
        "committed fracatlas model",
        &mut committed_model(),
        &files,
        dir.path(),
    );
}

/// The script's preprocessing on its own, where it matters most: colour, odd sizes, both
/// resize modes (a stretched model too), compared pixel for pixel via the probabilities of a
/// model whose output moves with every pixel.
#[test]
fn onnx_runtime_script_preprocesses_like_fracture_nn() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for (i, (w, h)) in [(300u32, 200u32), (37, 91), (64, 64), (500, 499), (13, 7)]
        .iter()
        .enumerate()
    {
        let img =
            image::RgbImage::from_fn(*w, *h, |_, _| image::Rgb([rng.gen(), rng.gen(), rng.gen()]));
        let rgb = dir.path().join(format!("rgb{i}.png"));
        img.save(&rgb).unwrap();
        files.push(rgb);
        let gray =
            image::GrayImage::from_fn(*w, *h, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8]));
        let g = dir.path().join(format!("gray{i}.png"));
        gray.save(&g).unwrap();
        files.push(g);
    }
    for mode in [ResizeMode::Letterbox, ResizeMode::Stretch] {
        let mut clf = random_classifier(ModelConfig::phantom(32), Tta::Off, 5);
        clf.meta.preprocess = PreprocessConfig {
            resize_mode: mode,
            ..clf.meta.preprocess
        };
        check_runtime(
            &py,
            &format!("random plain, {mode:?}"),
            &mut clf,
            &files,
            dir.path(),
        );
    }
}
