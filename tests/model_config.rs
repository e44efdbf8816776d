//! The architecture description (`ModelConfig` around one typed `Architecture` per family):
//! options that change the network's shape (the stem pool, blocks and strides per stage,
//! unpooled plain stages, the head), and how descriptions read from model files, in the typed
//! form and in the flat form of files written before it.

use fracture_nn::layers::{Layer, Mode};
use fracture_nn::model::{Architecture, EfficientNetLite, PlainNet, PlainStage, ResNet, ResStage};
use fracture_nn::tensor::Tensor4;
use fracture_nn::{BlockKind, Head, ModelConfig};
use serde_json::json;

mod common;

fn residual(size: usize) -> ModelConfig {
    ModelConfig {
        image_size: size,
        head: Head::AvgMax,
        ..ModelConfig::default()
    }
    .with_arch(ResNet::new(&[4, 8, 8], 1))
}

/// Output of the feature extractor (the `stem` and `blocks` groups, or `blocks` alone) for a
/// batch of ones.
fn feature_map(cfg: &ModelConfig) -> [usize; 4] {
    let mut net = cfg.build(3).unwrap();
    let s = cfg.image_size;
    let mut h = Tensor4::from_vec([2, 1, s, s], vec![1.0; 2 * s * s]).unwrap();
    for name in ["stem", "blocks"] {
        if let Some(layer) = net.get_mut(name) {
            h = layer.forward(&h, Mode::Eval).unwrap();
        }
    }
    h.shape()
}

/// Every parameter and buffer of the network `cfg` builds from `seed`, by name.
fn tensors(cfg: &ModelConfig, seed: u64) -> Vec<(String, Vec<f32>)> {
    common::named_tensors(&cfg.build(seed).unwrap())
}

#[test]
fn the_stem_pool_halves_every_stage_map_and_adds_no_parameters() {
    let without = residual(64);
    let with = residual(64).with_arch(ResNet::new(&[4, 8, 8], 1).with_stem_pool(true));
    // 64 px: stride-2 stem -> 32, stages 32, 16, 8; with the pool 16, 8, 4.
    assert_eq!(feature_map(&without), [2, 8, 8, 8]);
    assert_eq!(feature_map(&with), [2, 8, 4, 4]);
    assert_eq!(with.downsampling(), 2 * without.downsampling());
    assert_eq!(
        with.build(0).unwrap().num_params(),
        without.build(0).unwrap().num_params()
    );
    // Same seed, same weights: the pool draws nothing from the generator.
    assert_eq!(tensors(&with, 5), tensors(&without, 5));
}

#[test]
fn more_blocks_per_stage_add_blocks_under_consecutive_names() {
    let two = residual(32).with_arch(ResNet::new(&[4, 8, 8], 2));
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
fn stages_need_not_halve_the_map_and_the_description_gives_the_true_sizes() {
    // A residual stage of stride 1 after the first, and stages of different depths.
    let res = ResNet {
        stem_pool: false,
        stages: vec![
            ResStage {
                width: 4,
                blocks: 1,
                stride: 1,
            },
            ResStage {
                width: 8,
                blocks: 2,
                stride: 1,
            },
            ResStage {
                width: 8,
                blocks: 1,
                stride: 2,
            },
        ],
    };
    let cfg = residual(32).with_arch(res);
    assert_eq!(cfg.downsampling(), 4);
    let maps = cfg.feature_maps();
    let got: Vec<(&str, usize, usize)> = maps
        .iter()
        .map(|m| (m.path.as_str(), m.channels, m.side))
        .collect();
    assert_eq!(
        got,
        [("blocks.0", 4, 16), ("blocks.2", 8, 16), ("blocks.3", 8, 8)]
    );
    // The network agrees with the description: the last map's size and channels.
    assert_eq!(feature_map(&cfg), [2, 8, 8, 8]);
    // An input narrower than the 4x factor is refused.
    assert!(residual(3).with_arch(cfg.arch.clone()).validate().is_err());

    // A plain stage without its pool keeps the side.
    let plain = ModelConfig::phantom(32).with_arch(PlainNet {
        stages: vec![
            PlainStage {
                width: 4,
                pool: true,
            },
            PlainStage {
                width: 8,
                pool: false,
            },
            PlainStage {
                width: 8,
                pool: true,
            },
        ],
    });
    assert_eq!(plain.downsampling(), 4);
    let sides: Vec<usize> = plain.feature_maps().iter().map(|m| m.side).collect();
    assert_eq!(sides, [32, 16, 16]);
    assert_eq!(feature_map(&plain), [2, 8, 8, 8]);
    // The unpooled stage adds no parameter: same names and shapes as the pooled network.
    let pooled = ModelConfig::phantom(32).with_arch(PlainNet::new(&[4, 8, 8]));
    assert_eq!(tensors(&plain, 1), tensors(&pooled, 1));
}

#[test]
fn inputs_smaller_than_the_down_sampling_and_pooled_plain_stems_are_refused() {
    let small = residual(8).with_arch(ResNet::new(&[4, 8, 8], 1).with_stem_pool(true));
    // Three stages after a stride-2 stem and its pool: 16x down-sampling.
    let err = small.validate().unwrap_err().to_string();
    assert!(
        err.contains("smaller than the network's down-sampling factor 16"),
        "{err}"
    );
    let err = Architecture::uniform(BlockKind::Plain, &[4, 8], 1, true, 0.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("residual networks only"), "{err}");
    let bad_stride = residual(32).with_arch(ResNet {
        stem_pool: false,
        stages: vec![ResStage {
            width: 4,
            blocks: 1,
            stride: 3,
        }],
    });
    let err = bad_stride.validate().unwrap_err().to_string();
    assert!(err.contains("stride must be 1 or 2"), "{err}");
}

#[test]
fn the_typed_description_round_trips_and_names_its_family() {
    let cases = [
        ModelConfig::phantom(64),
        residual(64).with_arch(ResNet::new(&[4, 8, 8], 2).with_stem_pool(true)),
        ModelConfig {
            members: 3,
            ..ModelConfig::lite0(224)
        },
    ];
    for cfg in cases {
        let v = serde_json::to_value(&cfg).unwrap();
        let family = match cfg.kind() {
            BlockKind::Plain => "plain",
            BlockKind::Residual => "residual",
            BlockKind::EfficientNetLite(_) => "efficientnet_lite",
        };
        assert_eq!(v["arch"]["family"], family, "{v}");
        // Nothing of the flat form is written.
        for flat in [
            "block",
            "widths",
            "blocks_per_stage",
            "stem_pool",
            "drop_path",
        ] {
            assert!(v.get(flat).is_none(), "{flat} in {v}");
        }
        let back: ModelConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, cfg);
    }
}

/// The model descriptions of files written before the typed form, as they stand in them (the
/// first two are those of `models/fracatlas-scratch.safetensors` and
/// `models/fracatlas.safetensors`), with the typed description each must read as.
fn flat_files() -> Vec<(serde_json::Value, ModelConfig)> {
    vec![
        (
            json!({"image_size": 64, "in_channels": 1, "widths": [16, 32, 64, 128],
                   "blocks_per_stage": 2, "block": "residual", "dropout": 0.3,
                   "num_classes": 2, "head": "avg_max", "stem_pool": true}),
            ModelConfig {
                image_size: 64,
                head: Head::AvgMax,
                ..ModelConfig::default()
            }
            .with_arch(ResNet::new(&[16, 32, 64, 128], 2).with_stem_pool(true)),
        ),
        (
            json!({"image_size": 64, "in_channels": 1, "widths": [32, 1280],
                   "blocks_per_stage": 1, "block": "efficientnet_lite0", "dropout": 0.2,
                   "num_classes": 2, "head": "avg", "stem_pool": false, "members": 1,
                   "drop_path": 0.2}),
            ModelConfig::lite0(64),
        ),
        // Before `head` and `stem_pool` existed.
        (
            json!({"image_size": 32, "in_channels": 1, "widths": [16, 32, 64, 64],
                   "blocks_per_stage": 1, "block": "plain", "dropout": 0.2,
                   "num_classes": 2}),
            ModelConfig::phantom(32),
        ),
        // An ensemble of two residual networks.
        (
            json!({"image_size": 32, "in_channels": 1, "widths": [8, 16],
                   "blocks_per_stage": 1, "block": "residual", "dropout": 0.3,
                   "num_classes": 2, "head": "avg", "stem_pool": false, "members": 2}),
            ModelConfig {
                image_size: 32,
                members: 2,
                ..ModelConfig::default()
            }
            .with_arch(ResNet::new(&[8, 16], 1)),
        ),
    ]
}

#[test]
fn flat_descriptions_of_older_files_read_into_the_same_network() {
    for (json, typed) in flat_files() {
        let old: ModelConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(old, typed, "{json}");
        // Same layers, names and initial weights as the typed description builds.
        assert_eq!(tensors(&old, 7), tensors(&typed, 7), "{json}");
    }
}

#[test]
fn descriptions_that_mix_forms_or_lack_an_architecture_are_refused_with_a_reason() {
    let mut mixed = serde_json::to_value(ModelConfig::phantom(32)).unwrap();
    mixed["widths"] = json!([8, 16]);
    let err = serde_json::from_value::<ModelConfig>(mixed)
        .unwrap_err()
        .to_string();
    assert!(err.contains("both `arch`"), "{err}");

    let mut none = serde_json::to_value(ModelConfig::phantom(32)).unwrap();
    none.as_object_mut().unwrap().remove("arch");
    let err = serde_json::from_value::<ModelConfig>(none)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lacks `arch`"), "{err}");

    let mut unknown = serde_json::to_value(ModelConfig::phantom(32)).unwrap();
    unknown["arch"]["family"] = json!("transformer");
    let err = serde_json::from_value::<ModelConfig>(unknown)
        .unwrap_err()
        .to_string();
    assert!(err.contains("transformer"), "{err}");

    // A flat plain file with a stem pool was never valid and is not now.
    let err = serde_json::from_value::<ModelConfig>(json!({
        "image_size": 32, "in_channels": 1, "widths": [8], "blocks_per_stage": 1,
        "block": "plain", "dropout": 0.2, "num_classes": 2, "stem_pool": true}))
    .unwrap_err()
    .to_string();
    assert!(err.contains("residual networks only"), "{err}");
}

#[test]
fn every_family_describes_what_grad_cam_reads_and_the_network_computes_it() {
    // For every family: run the built network as a chain and check that each feature map
    // the description names exists, with the channels and side the description gives.
    for cfg in [
        ModelConfig::phantom(40),
        residual(40).with_arch(ResNet::new(&[4, 8, 8], 2).with_stem_pool(true)),
        ModelConfig::lite0(64).with_arch(EfficientNetLite::default().with_drop_path(0.0)),
    ] {
        let net = cfg.build(0).unwrap();
        let chain = Box::new(net).into_chain("");
        let s = cfg.image_size;
        let mut h = Tensor4::from_vec([1, 1, s, s], vec![0.5; s * s]).unwrap();
        let mut shapes = std::collections::HashMap::new();
        for (name, mut layer) in chain {
            h = layer.forward(&h, Mode::Eval).unwrap();
            shapes.insert(name, h.shape());
        }
        for map in cfg.backbone().feature_maps(s) {
            let shape = shapes
                .get(&map.path)
                .unwrap_or_else(|| panic!("{} is not a layer of {}", map.path, cfg.describe()));
            assert_eq!(
                shape[1..],
                [map.channels, map.side, map.side],
                "{}",
                map.path
            );
        }
    }
}
