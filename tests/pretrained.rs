//! The ImageNet EfficientNet-Lite0, Lite1 and Lite2 weights (`../shared/pretrained`) run by
//! fracture-nn's own engine against PyTorch's logits (`../shared/golden/lite{0,1,2}_imagenet_forward`,
//! at each variant's native size), RGB and with the stem summed to one gray channel; the
//! variant told from a file's shapes; and the import path a user takes.

use std::path::PathBuf;

use fracture_nn::layers::{Layer, Mode};
use fracture_nn::model::LiteVariant;
use fracture_nn::pretrained::{self, ClassifierInit};
use fracture_nn::tensor::Tensor4;
use fracture_nn::{BlockKind, ModelConfig};
use fracture_test_support::shared_dir;

/// The ImageNet weights of `variant` in `../shared/pretrained`.
fn weights_of(dir: &std::path::Path, variant: LiteVariant) -> PathBuf {
    dir.join("pretrained").join(match variant {
        LiteVariant::Lite0 => "efficientnet-lite0-57934424.pth",
        LiteVariant::Lite1 => "efficientnet-lite1-77cc7160.pth",
        LiteVariant::Lite2 => "efficientnet-lite2-9656183e.pth",
    })
}

fn weights(dir: &std::path::Path) -> PathBuf {
    weights_of(dir, LiteVariant::Lite0)
}

/// Golden tensors and metadata of `lite{0,1,2}_imagenet_forward`.
struct Golden {
    tensors: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
    meta: std::collections::HashMap<String, String>,
}

impl Golden {
    fn load(dir: &std::path::Path, variant: LiteVariant) -> Golden {
        let file = format!(
            "golden/lite{}_imagenet_forward.safetensors",
            variant as usize
        );
        let bytes = std::fs::read(dir.join(file)).unwrap();
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

/// The network of `variant` for an input `x` of the golden file: its channels, size and 1000
/// classes.
fn imagenet_model(variant: LiteVariant, x: &Tensor4, classes: usize) -> ModelConfig {
    let [_, c, h, _] = x.shape();
    ModelConfig {
        in_channels: c,
        num_classes: classes,
        ..ModelConfig::efficientnet_lite(variant, h)
    }
}

#[test]
fn lite0_imagenet_logits_match_pytorch() {
    imagenet_logits_match_pytorch(LiteVariant::Lite0);
}

#[test]
fn lite1_imagenet_logits_match_pytorch() {
    imagenet_logits_match_pytorch(LiteVariant::Lite1);
}

#[test]
fn lite2_imagenet_logits_match_pytorch() {
    imagenet_logits_match_pytorch(LiteVariant::Lite2);
}

fn imagenet_logits_match_pytorch(variant: LiteVariant) {
    let Some(dir) = shared_dir() else {
        return;
    };
    let g = Golden::load(&dir, variant);
    let source = pretrained::read_tensors(&weights_of(&dir, variant)).unwrap();
    for (x_name, logits_name, top_key) in [
        ("x_rgb", "logits_rgb", "top5_rgb"),
        ("x_gray", "logits_gray", "top5_gray"),
    ] {
        let x = g.t4(x_name);
        let want = &g.tensors[logits_name];
        assert_eq!(x.shape()[2], variant.native_size());
        let model = imagenet_model(variant, &x, want.0[1]);
        let mut net = model.build(0).unwrap();
        let report =
            pretrained::load_into(&mut net, &model, &source, ClassifierInit::Load).unwrap();
        assert!(report.unused.is_empty(), "unused: {:?}", report.unused);
        assert_eq!(report.adapted.len(), usize::from(x.shape()[1] == 1));
        let logits = net.forward(&x, Mode::Eval).unwrap();
        let worst = logits
            .as_slice()
            .iter()
            .zip(&want.1)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{variant:?} {logits_name}: max |diff| {worst:.2e}");
        assert!(
            worst <= 1e-3,
            "{variant:?} {logits_name}: max |diff| {worst}"
        );
        assert_eq!(
            top5(logits.as_slice()),
            g.top5(top_key),
            "{variant:?} {logits_name} top-5"
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
    assert_eq!(
        Some(clf.meta.normalization),
        ModelConfig::lite0(224)
            .backbone()
            .pretrained_normalization()
    );
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
    assert!(err.contains("no published pretrained weights"), "{err}");
}

/// `import` tells the variant from the file's shapes, and refuses a file of another variant
/// naming the first tensor that does not fit.
#[test]
fn the_variant_is_told_from_the_files_shapes() {
    let Some(dir) = shared_dir() else {
        return;
    };
    for variant in LiteVariant::ALL {
        let kind = pretrained::detect(&weights_of(&dir, variant)).unwrap();
        assert_eq!(kind, BlockKind::EfficientNetLite(variant));
    }
    // Lite1 weights into a Lite2 network: the first block whose width differs is named.
    let lite2 = ModelConfig::efficientnet_lite(LiteVariant::Lite2, 64);
    let err = pretrained::import(&weights_of(&dir, LiteVariant::Lite1), &lite2, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("efficientnet-lite1-77cc7160.pth"), "{err}");
    assert!(
        err.contains("_blocks.") && err.contains("in the model"),
        "{err}"
    );
    // Lite1 has Lite0's widths but more blocks per stage: its fourth block already belongs
    // to another stage of Lite0, and that block is named.
    let lite0 = ModelConfig::lite0(64);
    let err = pretrained::import(&weights_of(&dir, LiteVariant::Lite1), &lite0, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("_blocks.3._depthwise_conv.weight has shape [144, 1, 3, 3] in the file"),
        "{err}"
    );
    // A file of another family altogether.
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("residual.safetensors");
    fracture_nn::Classifier::new(
        fracture_nn::ClassifierMeta::new(ModelConfig::phantom(32), Default::default()),
        0,
    )
    .unwrap()
    .save(&other)
    .unwrap();
    let err = pretrained::detect(&other).err().unwrap().to_string();
    assert!(
        err.contains("none of their tensors is in the file"),
        "{err}"
    );
}
