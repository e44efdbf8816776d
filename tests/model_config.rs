//! Architecture options of `ModelConfig` that change the network's shape: the stem pool, the
//! number of residual blocks, the head, and how a config reads from older model files.

use fracture_nn::layers::{Layer, Mode};
use fracture_nn::tensor::Tensor4;
use fracture_nn::{BlockKind, Head, ModelConfig};

fn residual(size: usize) -> ModelConfig {
    ModelConfig {
        image_size: size,
        widths: vec![4, 8, 8],
        blocks_per_stage: 1,
        block: BlockKind::Residual,
        head: Head::AvgMax,
        ..ModelConfig::default()
    }
}

/// Output of the feature extractor (the `blocks` group) for a batch of ones.
fn feature_map(cfg: &ModelConfig) -> [usize; 4] {
    let mut net = cfg.build(3).unwrap();
    let s = cfg.image_size;
    let x = Tensor4::from_vec([2, 1, s, s], vec![1.0; 2 * s * s]).unwrap();
    let mut h = x;
    for name in ["stem", "blocks"] {
        let layer = net.get_mut(name).unwrap();
        h = layer.forward(&h, Mode::Eval).unwrap();
    }
    h.shape()
}

#[test]
fn the_stem_pool_halves_every_stage_map_and_adds_no_parameters() {
    let without = residual(64);
    let with = ModelConfig {
        stem_pool: true,
        ..residual(64)
    };
    // 64 px: stride-2 stem -> 32, stages 32, 16, 8; with the pool 16, 8, 4.
    assert_eq!(feature_map(&without), [2, 8, 8, 8]);
    assert_eq!(feature_map(&with), [2, 8, 4, 4]);
    assert_eq!(with.downsampling(), 2 * without.downsampling());
    assert_eq!(
        with.build(0).unwrap().num_params(),
        without.build(0).unwrap().num_params()
    );
    // Same seed, same weights: the pool draws nothing from the generator.
    let a = with.build(5).unwrap();
    let b = without.build(5).unwrap();
    for ((na, pa), (nb, pb)) in a.named_params().iter().zip(b.named_params().iter()) {
        assert_eq!(na, nb);
        assert_eq!(pa.value.as_slice(), pb.value.as_slice());
    }
}

#[test]
fn more_blocks_per_stage_add_blocks_under_consecutive_names() {
    let two = ModelConfig {
        blocks_per_stage: 2,
        ..residual(32)
    };
    let net = two.build(0).unwrap();
    let names: Vec<String> = net.named_params().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().any(|n| n.starts_with("blocks.5.")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("blocks.6.")),
        "{names:?}"
    );
    assert_eq!(feature_map(&two), feature_map(&residual(32)));
}

#[test]
fn inputs_smaller_than_the_down_sampling_and_pooled_plain_stems_are_refused() {
    let small = ModelConfig {
        stem_pool: true,
        ..residual(8)
    };
    // Three stages after a stride-2 stem and its pool: 16x down-sampling.
    let err = small.validate().unwrap_err().to_string();
    assert!(
        err.contains("smaller than the network's down-sampling factor 16"),
        "{err}"
    );
    let plain = ModelConfig {
        stem_pool: true,
        ..ModelConfig::phantom(64)
    };
    let err = plain.validate().unwrap_err().to_string();
    assert!(err.contains("residual networks only"), "{err}");
}

#[test]
fn configs_written_before_the_head_and_stem_pool_existed_read_with_their_defaults() {
    let mut json = serde_json::to_value(residual(64)).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.remove("head");
    obj.remove("stem_pool");
    let old: ModelConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old.head, Head::Avg);
    assert!(!old.stem_pool);
    let pooled = ModelConfig {
        stem_pool: true,
        ..residual(64)
    };
    let back: ModelConfig = serde_json::from_str(&serde_json::to_string(&pooled).unwrap()).unwrap();
    assert_eq!(back, pooled);
}
