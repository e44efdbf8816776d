//! The ImageNet EfficientNet-Lite0 weights (`../shared/pretrained`) run by fracture-nn's own
//! engine against PyTorch's logits (`../shared/golden/lite0_imagenet_forward`), RGB and with the
//! stem summed to one gray channel; and the import path a user takes.

use std::path::PathBuf;

use fracture_nn::layers::{Layer, Mode};
use fracture_nn::pretrained::{self, ClassifierInit};
use fracture_nn::tensor::Tensor4;
use fracture_nn::ModelConfig;
use fracture_test_support::shared_dir;

fn weights(dir: &std::path::Path) -> PathBuf {
    dir.join("pretrained/efficientnet-lite0-57934424.pth")
}

/// Golden tensors and metadata of `lite0_imagenet_forward`.
struct Golden {
    tensors: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
    meta: std::collections::HashMap<String, String>,
}

impl Golden {
    fn load(dir: &std::path::Path) -> Golden {
        let bytes = std::fs::read(dir.join("golden/lite0_imagenet_forward.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                let data = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (n, (v.shape().to_vec(), data))
            })
            .collect();
        let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        Golden {
            tensors,
            meta: m.metadata().clone().unwrap_or_default(),
        }
    }

    fn t4(&self, name: &str) -> Tensor4 {
        let (shape, data) = &self.tensors[name];
        let mut s = [1usize; 4];
        s[..shape.len()].copy_from_slice(shape);
        Tensor4::from_vec(s, data.clone()).unwrap()
    }

    fn top5(&self, key: &str) -> Vec<usize> {
        serde_json::from_str(&self.meta[key]).unwrap()
    }
}

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(5);
    idx
}

/// The network for an input `x` of the golden file: its channels, size and 1000 classes.
fn imagenet_model(x: &Tensor4, classes: usize) -> ModelConfig {
    let [_, c, h, _] = x.shape();
    ModelConfig {
        in_channels: c,
        num_classes: classes,
        ..ModelConfig::lite0(h)
    }
}

#[test]
fn lite0_imagenet_logits_match_pytorch() {
    let Some(dir) = shared_dir() else {
        return;
    };
    let g = Golden::load(&dir);
    let source = pretrained::read_tensors(&weights(&dir)).unwrap();
    for (x_name, logits_name, top_key) in [
        ("x_rgb", "logits_rgb", "top5_rgb"),
        ("x_gray", "logits_gray", "top5_gray"),
    ] {
        let x = g.t4(x_name);
        let want = &g.tensors[logits_name];
        let model = imagenet_model(&x, want.0[1]);
        let mut net = model.build(0).unwrap();
        let report = pretrained::load_into(&mut net, &source, ClassifierInit::Load).unwrap();
        assert!(report.unused.is_empty(), "unused: {:?}", report.unused);
        assert_eq!(report.adapted.len(), usize::from(x.shape()[1] == 1));
        let logits = net.forward(&x, Mode::Eval).unwrap();
        let worst = logits
            .as_slice()
            .iter()
            .zip(&want.1)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{logits_name}: max |diff| {worst:.2e}");
        assert!(worst <= 1e-3, "{logits_name}: max |diff| {worst}");
        assert_eq!(
            top5(logits.as_slice()),
            g.top5(top_key),
            "{logits_name} top-5"
        );
    }
}

/// What `fracture import` does: a gray 2-class model whose backbone is ImageNet's.
#[test]
fn import_makes_a_gray_two_class_model() {
    let Some(dir) = shared_dir() else {
        return;
    };
    let (clf, report) = pretrained::import(&weights(&dir), &ModelConfig::lite0(224), 3).unwrap();
    assert_eq!(report.replaced, ["_fc.weight", "_fc.bias"]);
    assert!(report.unused.is_empty());
    assert_eq!(report.adapted.len(), 1);
    assert_eq!(clf.meta.normalization, pretrained::PRETRAINED_NORMALIZATION);
    assert_eq!(
        clf.net.param("_fc.weight").unwrap().torch_shape(),
        [2, 1280]
    );
    // Saved and loaded back, it predicts the same.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("lite0.safetensors");
    clf.save(&path).unwrap();
    let mut back = fracture_nn::Classifier::load(&path).unwrap();
    let mut clf = clf;
    let x = vec![0.25f32; 224 * 224];
    assert_eq!(
        back.predict_batch(&x, 1).unwrap(),
        clf.predict_batch(&x, 1).unwrap()
    );
    // Weights of another architecture are refused by name.
    let err = pretrained::import(&weights(&dir), &ModelConfig::default(), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing from the file"), "{err}");
}
