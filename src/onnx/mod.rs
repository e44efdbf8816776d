//! ONNX export: a [`Classifier`] as a standard ONNX graph (opset 17) that ONNX Runtime,
//! NVIDIA Triton or any other ONNX engine runs without fracture-nn.
//!
//! The graph:
//! - input `image`: float32 `[N, 1, S, S]`, `N` dynamic, **already normalised** as the model
//!   expects ([`ClassifierMeta::input_formula`]: `x = (p / 255 - mean) / std` for the 8-bit
//!   gray pixel `p` after the resize to `S` px, with the numbers of the model file);
//! - output `p_fractured`: float32 `[N]`, the softmax probability of the positive class as
//!   [`Classifier::predict_tensor`] reports it, test-time flip averaging included when the model
//!   uses it ([`crate::Tta::HFlip`]: the batch and its left-right mirror run through the same
//!   network, and the two views' *probabilities* are averaged, as [`crate::tta`] does);
//! - output `logits`: float32 `[N, 2]`, the network's logits for the image as given (with
//!   flip averaging, those of the unflipped view; `p_fractured` is then not their softmax);
//! - output `fracture_map` (only for a model with a box-mask head,
//!   [`crate::ModelConfig::mask_head`]): float32 `[N, 1, h, w]`, per cell of the head's grid
//!   (`h = w = S / 16`), the probability that it lies on a fracture, for the image as given:
//!   the "where" answer that `fracture predict --heatmap` draws;
//! - output `typicality` (only for a model with a typicality bank, [`crate::typicality`]):
//!   float32 `[N]`, the k-NN score of the image as given; above the metadata's
//!   `typicality_q99` the image is unlike the training radiographs.
//!
//! Every layer the project builds is written out by walking the network (`src/onnx/export.rs`):
//! plain, residual and EfficientNet-Lite0 networks (grouped/depthwise convolutions, ReLU6 as
//! `Clip`), fused batch-norm/ReLU/pool layers, average and max+average heads, and ensembles
//! (the mean of the members' logits, as [`fracture_layers::Ensemble`]). Batch norms are folded
//! into the convolution before them. The threshold, class names, normalisation, resize mode and
//! the whole [`ClassifierMeta`] travel as `metadata_props`.
//!
//! ```
//! use fracture_nn::{onnx, Classifier, ClassifierMeta, ModelConfig};
//! let meta = ClassifierMeta::new(ModelConfig::phantom(32), fracture_nn::data::Normalization { mean: 0.5, std: 0.25 });
//! let clf = Classifier::new(meta, 1)?;
//! let model = onnx::export(&clf)?;
//! assert_eq!(model.opset_import[0].version, onnx::OPSET);
//! let graph = model.graph.as_ref().unwrap();
//! assert_eq!(graph.output[0].name, "p_fractured");
//! assert!(graph.node.iter().all(|n| n.op_type != "BatchNormalization")); // all folded
//! let threshold = model.metadata_props.iter().find(|e| e.key == "threshold").unwrap();
//! assert_eq!(threshold.value, "0.5");
//! # Ok::<(), fracture_nn::Error>(())
//! ```

mod export;
mod graph;
pub mod proto;

use std::path::Path;

use prost::Message;

use crate::classifier::{Classifier, ClassifierMeta};
use crate::error::{io_err, Error, Result};
use crate::tta::Tta;
use graph::{attr_int, attr_ints, value_info, Dim, GraphBuilder};
use proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};

/// The ONNX operator set the graph is written for.
pub const OPSET: i64 = 17;
/// The ONNX IR version of the file (8: the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;
/// Name of the graph input.
pub const INPUT: &str = "image";
/// Name of the probability output.
pub const OUTPUT_PROB: &str = "p_fractured";
/// Name of the logits output.
pub const OUTPUT_LOGITS: &str = "logits";
/// Name of the box-mask output of a model with a mask head.
pub const OUTPUT_MAP: &str = "fracture_map";
/// Name of the typicality output of a model with a typicality bank.
pub const OUTPUT_TYPICALITY: &str = "typicality";

/// The classifier as an ONNX model (see the [module docs](self)).
pub fn export(clf: &Classifier) -> Result<ModelProto> {
    let meta = &clf.meta;
    let s = meta.model.image_size;
    let c = meta.model.in_channels;
    let k = meta.model.num_classes;
    let mut g = GraphBuilder::default();
    for name in [
        INPUT,
        OUTPUT_PROB,
        OUTPUT_LOGITS,
        OUTPUT_MAP,
        OUTPUT_TYPICALITY,
    ] {
        g.reserve(name);
    }
    // With flip averaging the network sees [x; hflip(x)] as one batch of 2N.
    let net_in = match meta.tta {
        Tta::Off => INPUT.to_string(),
        Tta::HFlip => {
            let rev: Vec<i64> = (0..s as i64).rev().collect();
            let idx = g.constant_i64("tta.reversed_columns", &[s], &rev);
            let flipped = g.node(
                "Gather",
                &[INPUT, &idx],
                vec![attr_int("axis", 3)],
                "tta.hflip",
            );
            g.node(
                "Concat",
                &[INPUT, &flipped],
                vec![attr_int("axis", 0)],
                "tta.views",
            )
        }
    };
    let mut walker = export::Walker {
        g: &mut g,
        convs_folded: 0,
        mask_logits: None,
        typicality: None,
    };
    let logits = walker.layer(&clf.net, "", &net_in)?;
    let mask_logits = walker.mask_logits.take();
    let typicality = walker.typicality.take();
    if let Some(t) = &typicality {
        let t = match meta.tta {
            Tta::Off => t.clone(),
            Tta::HFlip => {
                // [2N] -> [2, N], view 0: the image as given.
                let shape = g.constant_i64("tta.typicality_shape", &[2], &[2, -1]);
                let tv = g.node("Reshape", &[t, &shape], vec![], "tta.typicality_by_view");
                let zero = g.constant_i64("tta.typicality_first_view", &[], &[0]);
                g.node(
                    "Gather",
                    &[&tv, &zero],
                    vec![attr_int("axis", 0)],
                    "tta.typicality",
                )
            }
        };
        g.node_into("Identity", &[&t], vec![], OUTPUT_TYPICALITY);
    }
    let map_side = meta.model.mask_site().ok().map(|site| site.side);
    if let (Some(m), Some(side)) = (&mask_logits, map_side) {
        let m = match meta.tta {
            Tta::Off => m.clone(),
            Tta::HFlip => {
                // [2N, 1, h, w] -> [2, N, 1, h, w], view 0: the image as given.
                let shape =
                    g.constant_i64("tta.map_shape", &[5], &[2, -1, 1, side as i64, side as i64]);
                let mv = g.node("Reshape", &[m, &shape], vec![], "tta.map_by_view");
                let zero = g.constant_i64("tta.map_first_view", &[], &[0]);
                g.node(
                    "Gather",
                    &[&mv, &zero],
                    vec![attr_int("axis", 0)],
                    "tta.map",
                )
            }
        };
        g.node_into("Sigmoid", &[&m], vec![], OUTPUT_MAP);
    }
    let probs = g.node("Softmax", &[&logits], vec![attr_int("axis", 1)], "probs");
    let (probs, logits) = match meta.tta {
        Tta::Off => (probs, logits),
        Tta::HFlip => {
            // [2N, k] -> [2, N, k]: view 0 the image, view 1 its mirror.
            let shape = g.constant_i64("tta.view_shape", &[3], &[2, -1, k as i64]);
            let pv = g.node("Reshape", &[&probs, &shape], vec![], "tta.probs_by_view");
            let mean = g.node(
                "ReduceMean",
                &[&pv],
                vec![attr_ints("axes", &[0]), attr_int("keepdims", 0)],
                "tta.mean_probs",
            );
            let lv = g.node("Reshape", &[&logits, &shape], vec![], "tta.logits_by_view");
            let zero = g.constant_i64("tta.first_view", &[], &[0]);
            let first = g.node(
                "Gather",
                &[&lv, &zero],
                vec![attr_int("axis", 0)],
                "tta.logits",
            );
            (mean, first)
        }
    };
    let pos = g.constant_i64("positive_class", &[], &[meta.positive_class as i64]);
    g.node_into(
        "Gather",
        &[&probs, &pos],
        vec![attr_int("axis", 1)],
        OUTPUT_PROB,
    );
    g.node_into("Identity", &[&logits], vec![], OUTPUT_LOGITS);
    let doc = doc_string(meta);
    let inputs = vec![value_info(
        INPUT,
        &[Dim::Named("N"), Dim::Fixed(c), Dim::Fixed(s), Dim::Fixed(s)],
        &meta.input_formula(),
    )];
    let outputs = vec![
        value_info(
            OUTPUT_PROB,
            &[Dim::Named("N")],
            &format!(
                "P({}) after softmax{}",
                meta.class_names[meta.positive_class],
                tta_note(meta.tta)
            ),
        ),
        value_info(
            OUTPUT_LOGITS,
            &[Dim::Named("N"), Dim::Fixed(k)],
            "the network's logits (classes in the order of metadata class_names); with flip \
             averaging, those of the unflipped image",
        ),
    ];
    let mut outputs = outputs;
    if let (Some(_), Some(side)) = (&mask_logits, map_side) {
        outputs.push(value_info(
            OUTPUT_MAP,
            &[Dim::Named("N"), Dim::Fixed(1), Dim::Fixed(side), Dim::Fixed(side)],
            "per cell, P(the cell lies on a fracture) from the box-mask head, for the image as given",
        ));
    }
    if let (Some(_), Some(cfg)) = (&typicality, &meta.model.typicality) {
        outputs.push(value_info(
            OUTPUT_TYPICALITY,
            &[Dim::Named("N")],
            &format!(
                "k-NN typicality score of the image as given (lower: more like the training radiographs); atypical above {}",
                cfg.q99
            ),
        ));
    }
    let graph = g.finish("fracture_nn", &doc, inputs, outputs);
    Ok(ModelProto {
        ir_version: IR_VERSION,
        producer_name: "fracture-nn".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: doc,
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: metadata(meta),
    })
}

/// Writes [`export()`]'s model to `path` atomically (a temporary file in the same folder,
/// renamed into place); returns the number of bytes written.
pub fn write(clf: &Classifier, path: &Path) -> Result<usize> {
    let bytes = export(clf)?.encode_to_vec();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, &bytes).map_err(io_err(path))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io {
            path: path.to_path_buf(),
            source: e,
        }
    })?;
    Ok(bytes.len())
}

fn tta_note(tta: Tta) -> &'static str {
    match tta {
        Tta::Off => "",
        Tta::HFlip => {
            ", averaged over the image and its left-right mirror image (test-time flip \
             averaging, inside the graph)"
        }
    }
}

/// The graph's doc string: what goes in, what comes out.
fn doc_string(meta: &ClassifierMeta) -> String {
    let s = meta.model.image_size;
    format!(
        "fracture-nn {:?} classifier ({} member(s)). Input `{INPUT}`: float32 [N, {}, {s}, {s}], \
         already normalised: {}. Outputs: `{OUTPUT_PROB}` [N] = P({}) after softmax{}; \
         `{OUTPUT_LOGITS}` [N, {}] (classes {:?}). Operating threshold {} ({}): P >= threshold \
         reads as {}.",
        meta.model.kind(),
        meta.model.members,
        meta.model.in_channels,
        meta.input_formula(),
        meta.class_names[meta.positive_class],
        tta_note(meta.tta),
        meta.model.num_classes,
        meta.class_names,
        meta.threshold,
        meta.threshold_rule,
        meta.class_names[meta.positive_class],
    )
}

/// `metadata_props`: flat keys for scoring code, and the model file's whole metadata as JSON.
fn metadata(meta: &ClassifierMeta) -> Vec<StringStringEntryProto> {
    let n = meta.normalization;
    let entries = [
        ("threshold", meta.threshold.to_string()),
        ("threshold_rule", meta.threshold_rule.clone()),
        (
            "class_names",
            serde_json::to_string(&meta.class_names).expect("strings serialise"),
        ),
        ("positive_class", meta.positive_class.to_string()),
        (
            "positive_class_name",
            meta.class_names[meta.positive_class].clone(),
        ),
        ("normalization_mean", n.mean.to_string()),
        ("normalization_std", n.std.to_string()),
        ("normalization", meta.input_formula()),
        ("image_size", meta.preprocess.image_size.to_string()),
        (
            "resize_mode",
            serde_json::to_value(meta.preprocess.resize_mode)
                .expect("a unit enum serialises")
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        (
            "tta",
            match meta.tta {
                Tta::Off => "off".to_string(),
                Tta::HFlip => "hflip (inside the graph)".to_string(),
            },
        ),
        (
            crate::META_KEY,
            serde_json::to_string(meta).expect("ClassifierMeta serialises"),
        ),
    ];
    let typicality = meta.model.typicality.as_ref().map(|t| {
        [
            ("typicality_q95", t.q95.to_string()),
            ("typicality_q99", t.q99.to_string()),
        ]
    });
    entries
        .into_iter()
        .chain(typicality.into_iter().flatten())
        .map(|(k, v)| StringStringEntryProto {
            key: k.to_string(),
            value: v,
        })
        .collect()
}
