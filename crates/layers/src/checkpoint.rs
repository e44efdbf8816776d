//! Safetensors checkpoints of models and optimizer state.
//!
//! # Model files
//! Every parameter and buffer of a model, in f32, under its state-dict name and with its PyTorch
//! shape (conv weight `[O, C, KH, KW]`, linear weight `[out, in]`, vectors `[C]`), so that
//! `safetensors.torch.load_file` gives a dict PyTorch's `load_state_dict` understands (batch
//! norm's `num_batches_tracked` is not stored). The header's `__metadata__` holds the caller's
//! string entries (e.g. the architecture config as JSON) plus the reserved entries
//! `format_version` ([`FORMAT_VERSION`]), `fracture_kind` (`"model"`), and, when the model has
//! dropout layers, `rng_streams` (JSON object: layer name -> `{"seed", "counter"}` of its
//! random stream, see [`RngStream`]).
//!
//! # Optimizer files
//! Slot tensors named `<param>.<slot>` (`fc.weight.momentum_buffer`, `fc.weight.exp_avg`), and
//! metadata `fracture_kind = "optimizer"`, `optimizer` (kind), `optimizer_config` (JSON) and
//! `optimizer_params` (JSON: step count and shape of every parameter).
//!
//! # Guarantees
//! - Writes are atomic: a temporary file in the destination directory, synced, then renamed.
//! - Files are byte-reproducible: tensors in name order, metadata keys sorted (the safetensors
//!   crate writes metadata in `HashMap` order, so the header is rewritten canonically).
//! - Loading checks every name, dtype and shape before touching the model; a missing,
//!   unexpected or misshapen tensor, or a truncated or corrupt file, is an error naming the
//!   tensor or the problem, never a panic.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::error::{LayersError, Result};
use crate::layer::{Layer, RngStream};
use crate::optim::{OptimizerState, ParamState};

/// Version of the checkpoint layout written by this crate (metadata entry `format_version`).
pub const FORMAT_VERSION: &str = "1";

/// Metadata keys this module writes itself; callers may not use them.
pub const RESERVED_KEYS: [&str; 6] = [
    "format_version",
    "fracture_kind",
    "rng_streams",
    "optimizer",
    "optimizer_config",
    "optimizer_params",
];

/// A file's `__metadata__`, sorted by key.
pub type Metadata = BTreeMap<String, String>;

fn bytes_path() -> PathBuf {
    PathBuf::from("<bytes>")
}

fn ckpt_err(path: &Path, reason: impl Into<String>) -> LayersError {
    LayersError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => {
            "shorter than the 8-byte header length (empty or truncated file)".into()
        }
        SafeTensorError::HeaderTooLarge => {
            "header length is implausibly large (not a safetensors file?)".into()
        }
        SafeTensorError::InvalidHeaderLength => {
            "header length runs past the end of the file (truncated?)".into()
        }
        SafeTensorError::InvalidHeader => "header is not UTF-8 (corrupt file)".into(),
        SafeTensorError::InvalidHeaderStart | SafeTensorError::InvalidHeaderDeserialization => {
            "header is not a valid safetensors JSON header (corrupt file)".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "tensor data does not match the header's offsets (truncated or padded file)".into()
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor {name:?} has invalid data offsets (corrupt file)")
        }
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's shape does not match its byte size (corrupt file)".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows (corrupt file)".into(),
        other => format!("invalid safetensors data: {other}"),
    }
}

/// Parses `bytes` as safetensors, first checking that every data offset lies inside the file
/// (the crate's own check can overflow on absurd offsets).
fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    if let Some(name) = offset_past_end(bytes) {
        return Err(ckpt_err(
            path,
            format!(
                "tensor {name:?} has data offsets past the end of the file (truncated or corrupt)"
            ),
        ));
    }
    SafeTensors::deserialize(bytes).map_err(|e| ckpt_err(path, describe(&e)))
}

/// The first tensor whose header offsets exceed the data actually present, if the header is
/// readable at all (an unreadable header is left for the crate to report).
fn offset_past_end(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let data_len = (bytes.len() as u64 - 8).checked_sub(n)?;
    let header = std::str::from_utf8(bytes.get(8..8 + usize::try_from(n).ok()?)?).ok()?;
    let serde_json::Value::Object(map) = serde_json::from_str(header).ok()? else {
        return None;
    };
    map.into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .find_map(|(name, info)| {
            let offsets = info.get("data_offsets")?.as_array()?.clone();
            offsets
                .iter()
                .any(|v| v.as_u64().is_some_and(|v| v > data_len))
                .then_some(name)
        })
}

fn file_metadata(bytes: &[u8], path: &Path) -> Result<Metadata> {
    parse(bytes, path)?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| ckpt_err(path, describe(&e)))?;
    Ok(meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// Serialises f32 tensors `(name, shape, values)` with `metadata` into canonical bytes.
fn write_tensors(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    metadata: &Metadata,
) -> Result<Vec<u8>> {
    let path = bytes_path();
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        let v = TensorView::new(Dtype::F32, shape.clone(), data)
            .map_err(|e| ckpt_err(&path, format!("tensor {name:?}: {}", describe(&e))))?;
        views.push((name.as_str(), v));
    }
    let info: HashMap<String, String> = metadata.clone().into_iter().collect();
    let raw =
        safetensors::serialize(views, &Some(info)).map_err(|e| ckpt_err(&path, describe(&e)))?;
    canonicalise(&raw, metadata).map_err(|reason| ckpt_err(&path, reason))
}

/// Rewrites the header of `raw` (written by the safetensors crate) with sorted metadata keys and
/// tensors in offset order, so that equal content gives equal bytes.
fn canonicalise(raw: &[u8], metadata: &Metadata) -> std::result::Result<Vec<u8>, String> {
    let bad = || "safetensors wrote an unreadable header".to_string();
    let n = u64::from_le_bytes(
        raw.get(..8)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let header = raw.get(8..8 + n).ok_or_else(bad)?;
    let data = &raw[8 + n..];
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|_| bad())?;
    let mut entries: Vec<(&String, &serde_json::Value)> =
        map.iter().filter(|(k, _)| *k != "__metadata__").collect();
    let start = |v: &serde_json::Value| v["data_offsets"][0].as_u64().unwrap_or(0);
    entries.sort_by(|a, b| start(a.1).cmp(&start(b.1)).then(a.0.cmp(b.0)));
    let mut s = String::from("{\"__metadata__\":");
    s.push_str(&json(metadata));
    for (name, info) in entries {
        s.push(',');
        s.push_str(&json(name));
        s.push(':');
        s.push_str(&json(info));
    }
    s.push('}');
    while s.len() % 8 != 0 {
        s.push(' ');
    }
    let mut out = Vec::with_capacity(8 + s.len() + data.len());
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn check_caller_metadata(metadata: &Metadata) -> Result<()> {
    if let Some(k) = metadata
        .keys()
        .find(|k| RESERVED_KEYS.contains(&k.as_str()))
    {
        return Err(ckpt_err(
            &bytes_path(),
            format!("metadata key {k:?} is reserved by fracture-layers"),
        ));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync, rename.
/// A reader sees the old file or the new one, never a partial write.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("run.json");
/// fracture_layers::checkpoint::write_atomic(&path, b"{}").unwrap();
/// fracture_layers::checkpoint::write_atomic(&path, b"{\"epoch\": 2}").unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"{\"epoch\": 2}");
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| LayersError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".fracture-tmp-")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Largest checkpoint file read (16 GiB): far above any model here, but a bound.
pub const MAX_FILE_BYTES: u64 = 16 << 30;

/// Reads a checkpoint file: regular files only (opening a FIFO would block), at most
/// [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| LayersError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a folder, FIFO, device or socket)",
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} bytes exceed the checkpoint limit of {MAX_FILE_BYTES}",
                meta.len()
            ),
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

/// A model's parameters and buffers (and dropout counters) as safetensors bytes, with the
/// caller's `metadata` (keys other than [`RESERVED_KEYS`]).
///
/// ```
/// use fracture_layers::{checkpoint, LinearConfig};
/// use rand::SeedableRng;
/// let fc = LinearConfig::new(3, 2).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// let meta = [("config".to_string(), "{\"in\":3}".to_string())].into_iter().collect();
/// let bytes = checkpoint::model_to_bytes(&fc, &meta).unwrap();
/// let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
/// assert_eq!(st.tensor("weight").unwrap().shape(), &[2, 3]);
/// ```
pub fn model_to_bytes(model: &dyn Layer, metadata: &Metadata) -> Result<Vec<u8>> {
    check_caller_metadata(metadata)?;
    let mut tensors = Vec::new();
    model.visit_params_ref("", &mut |name, p| {
        tensors.push((
            name.to_string(),
            p.torch_shape().to_vec(),
            f32_bytes(p.value.as_slice()),
        ))
    });
    model.visit_buffers_ref("", &mut |name, b| {
        tensors.push((
            name.to_string(),
            b.torch_shape().to_vec(),
            f32_bytes(b.value.as_slice()),
        ))
    });
    let mut names: Vec<&str> = tensors.iter().map(|t| t.0.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ckpt_err(
            &bytes_path(),
            format!("the model has two tensors named {:?}", w[0]),
        ));
    }
    let mut meta = metadata.clone();
    meta.insert("format_version".into(), FORMAT_VERSION.into());
    meta.insert("fracture_kind".into(), "model".into());
    let mut streams = BTreeMap::new();
    model.visit_rng_streams_ref("", &mut |name, s| {
        streams.insert(name.to_string(), *s);
    });
    if !streams.is_empty() {
        meta.insert("rng_streams".into(), json(&streams));
    }
    write_tensors(&tensors, &meta)
}

/// Saves a model to `path` atomically (see [`model_to_bytes`]).
///
/// ```
/// use fracture_layers::{checkpoint, LinearConfig};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let fc = LinearConfig::new(3, 2).init(&mut rng).unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("fc.safetensors");
/// checkpoint::save_model(&path, &fc, &Default::default()).unwrap();
/// let mut other = LinearConfig::new(3, 2).init(&mut rng).unwrap();
/// let meta = checkpoint::load_model(&path, &mut other).unwrap();
/// assert_eq!(other.weight(), fc.weight());
/// assert_eq!(meta["format_version"], checkpoint::FORMAT_VERSION);
/// ```
pub fn save_model(path: impl AsRef<Path>, model: &dyn Layer, metadata: &Metadata) -> Result<()> {
    let path = path.as_ref();
    let bytes = model_to_bytes(model, metadata).map_err(|e| relabel(e, path))?;
    write_atomic(path, &bytes)
}

/// Replaces `<bytes>` by the real path in errors raised before a file is involved.
fn relabel(e: LayersError, path: &Path) -> LayersError {
    match e {
        LayersError::Checkpoint { reason, .. } => ckpt_err(path, reason),
        other => other,
    }
}

fn check_kind(meta: &Metadata, want: &str, path: &Path) -> Result<()> {
    if let Some(v) = meta.get("format_version") {
        if v != FORMAT_VERSION {
            return Err(ckpt_err(
                path,
                format!(
                    "format_version {v:?} is not supported (this build reads {FORMAT_VERSION:?})"
                ),
            ));
        }
    }
    match meta.get("fracture_kind") {
        Some(k) if k != want => Err(ckpt_err(
            path,
            format!("holds a {k} checkpoint, expected a {want} checkpoint"),
        )),
        None if want != "model" => Err(ckpt_err(
            path,
            format!("not a fracture-nn {want} checkpoint"),
        )),
        _ => Ok(()),
    }
}

fn read_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Fetches tensor `name` from `st`, checking dtype F32 and `shape`.
fn get_f32(st: &SafeTensors<'_>, name: &str, shape: &[usize], path: &Path) -> Result<Vec<f32>> {
    let view = st.tensor(name).map_err(|_| LayersError::MissingTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        expected: shape.to_vec(),
    })?;
    if view.dtype() != Dtype::F32 || view.shape() != shape {
        return Err(LayersError::TensorMismatch {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: shape.to_vec(),
            got: format!("{:?} {:?}", view.dtype(), view.shape()),
        });
    }
    Ok(read_f32(view.data()))
}

/// Loads safetensors `bytes` into `model` (same rules as [`load_model`]); `path` names the
/// source in errors.
pub fn model_from_bytes(bytes: &[u8], model: &mut dyn Layer, path: &Path) -> Result<Metadata> {
    let st = parse(bytes, path)?;
    let meta = file_metadata(bytes, path)?;
    check_kind(&meta, "model", path)?;
    // Validate everything first, then copy, so a failed load leaves the model untouched.
    let mut values: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut err = None;
    model.visit_params_ref("", &mut |name, p| {
        if err.is_none() {
            match get_f32(&st, name, p.torch_shape(), path) {
                Ok(v) => drop(values.insert(name.to_string(), v)),
                Err(e) => err = Some(e),
            }
        }
    });
    model.visit_buffers_ref("", &mut |name, b| {
        if err.is_none() {
            match get_f32(&st, name, b.torch_shape(), path) {
                Ok(v) => drop(values.insert(name.to_string(), v)),
                Err(e) => err = Some(e),
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let mut names = st.names();
    names.sort();
    if let Some(extra) = names.into_iter().find(|n| !values.contains_key(*n)) {
        return Err(LayersError::UnexpectedTensor {
            path: path.to_path_buf(),
            name: extra.clone(),
        });
    }
    let mut wanted = Vec::new();
    model.visit_rng_streams_ref("", &mut |name, _| wanted.push(name.to_string()));
    let streams: BTreeMap<String, RngStream> = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        let raw = meta.get("rng_streams").ok_or_else(|| {
            ckpt_err(
                path,
                format!(
                    "metadata lacks rng_streams (the model has dropout layer {:?})",
                    wanted[0]
                ),
            )
        })?;
        let c: BTreeMap<String, RngStream> = serde_json::from_str(raw)
            .map_err(|e| ckpt_err(path, format!("metadata rng_streams is malformed: {e}")))?;
        if let Some(w) = wanted.iter().find(|w| !c.contains_key(*w)) {
            return Err(ckpt_err(path, format!("metadata rng_streams lacks {w:?}")));
        }
        c
    };
    model.visit_params("", &mut |name, p| {
        if let Some(v) = values.get(name) {
            p.value.as_slice_mut().copy_from_slice(v);
        }
    });
    model.visit_buffers("", &mut |name, b| {
        if let Some(v) = values.get(name) {
            b.value.as_slice_mut().copy_from_slice(v);
        }
    });
    model.visit_rng_streams("", &mut |name, s| {
        if let Some(v) = streams.get(name) {
            *s = *v;
        }
    });
    Ok(meta)
}

/// Loads the checkpoint at `path` into `model`, which must have exactly the file's tensors with
/// the same shapes; returns the file's metadata. On error the model is unchanged.
pub fn load_model(path: impl AsRef<Path>, model: &mut dyn Layer) -> Result<Metadata> {
    let path = path.as_ref();
    model_from_bytes(&read_file(path)?, model, path)
}

/// The `__metadata__` of a checkpoint (caller entries plus the reserved ones), without loading
/// it into a model (the file is still fully validated).
///
/// ```
/// use fracture_layers::{checkpoint, LinearConfig};
/// use rand::SeedableRng;
/// let fc = LinearConfig::new(3, 2).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("fc.safetensors");
/// let meta = [("arch".to_string(), "{\"fc\":[3,2]}".to_string())].into_iter().collect();
/// checkpoint::save_model(&path, &fc, &meta).unwrap();
/// assert_eq!(checkpoint::read_metadata(&path).unwrap()["arch"], "{\"fc\":[3,2]}");
/// ```
pub fn read_metadata(path: impl AsRef<Path>) -> Result<Metadata> {
    let path = path.as_ref();
    file_metadata(&read_file(path)?, path)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ParamInfo {
    step: u64,
    shape: Vec<usize>,
}

/// Optimizer state as safetensors bytes, with the caller's `metadata`.
pub fn optimizer_state_to_bytes(state: &OptimizerState, metadata: &Metadata) -> Result<Vec<u8>> {
    check_caller_metadata(metadata)?;
    let mut tensors = Vec::new();
    let mut info = BTreeMap::new();
    for (name, ps) in &state.params {
        info.insert(
            name.clone(),
            ParamInfo {
                step: ps.step,
                shape: ps.shape.clone(),
            },
        );
        for (slot, data) in &ps.slots {
            tensors.push((format!("{name}.{slot}"), ps.shape.clone(), f32_bytes(data)));
        }
    }
    let mut meta = metadata.clone();
    meta.insert("format_version".into(), FORMAT_VERSION.into());
    meta.insert("fracture_kind".into(), "optimizer".into());
    meta.insert("optimizer".into(), state.kind.clone());
    meta.insert("optimizer_config".into(), state.config_json.clone());
    meta.insert(
        "optimizer_params".into(),
        serde_json::to_string(&info).unwrap_or_default(),
    );
    write_tensors(&tensors, &meta)
}

/// Saves optimizer state to `path` atomically.
///
/// ```
/// use fracture_layers::optim::{AdamW, AdamWConfig, Optimizer};
/// use fracture_layers::{checkpoint, Layer, LinearConfig};
/// use rand::SeedableRng;
/// let mut fc = LinearConfig::new(3, 2).init(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
/// let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
/// fc.weight_mut().grad.as_slice_mut().fill(0.5);
/// opt.step(&mut fc, 1e-3).unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("opt.safetensors");
/// checkpoint::save_optimizer_state(&path, &opt.state(), &Default::default()).unwrap();
/// let mut resumed = AdamW::new(AdamWConfig::default()).unwrap();
/// resumed.load_state(checkpoint::load_optimizer_state(&path).unwrap()).unwrap();
/// assert_eq!(resumed.state(), opt.state());
/// ```
pub fn save_optimizer_state(
    path: impl AsRef<Path>,
    state: &OptimizerState,
    metadata: &Metadata,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = optimizer_state_to_bytes(state, metadata).map_err(|e| relabel(e, path))?;
    write_atomic(path, &bytes)
}

/// Parses optimizer state from safetensors `bytes`; `path` names the source in errors.
pub fn optimizer_state_from_bytes(bytes: &[u8], path: &Path) -> Result<OptimizerState> {
    let st = parse(bytes, path)?;
    let meta = file_metadata(bytes, path)?;
    check_kind(&meta, "optimizer", path)?;
    let field = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| ckpt_err(path, format!("metadata lacks {k}")))
    };
    let kind = field("optimizer")?;
    let config_json = field("optimizer_config")?;
    let info: BTreeMap<String, ParamInfo> = serde_json::from_str(&field("optimizer_params")?)
        .map_err(|e| ckpt_err(path, format!("metadata optimizer_params is malformed: {e}")))?;
    let mut params: BTreeMap<String, ParamState> = info
        .into_iter()
        .map(|(name, i)| {
            let ps = ParamState {
                step: i.step,
                shape: i.shape,
                slots: BTreeMap::new(),
            };
            (name, ps)
        })
        .collect();
    let mut names = st.names();
    names.sort();
    for tname in names {
        let owner = tname
            .rsplit_once('.')
            .and_then(|(p, slot)| params.get_mut(p).map(|ps| (ps, slot)));
        let Some((ps, slot)) = owner else {
            return Err(LayersError::UnexpectedTensor {
                path: path.to_path_buf(),
                name: tname.clone(),
            });
        };
        let data = get_f32(&st, tname, &ps.shape, path)?;
        ps.slots.insert(slot.to_string(), data);
    }
    Ok(OptimizerState {
        kind,
        config_json,
        params,
    })
}

/// Loads optimizer state saved by [`save_optimizer_state`]; feed it to
/// [`Optimizer::load_state`](crate::optim::Optimizer::load_state).
pub fn load_optimizer_state(path: impl AsRef<Path>) -> Result<OptimizerState> {
    let path = path.as_ref();
    optimizer_state_from_bytes(&read_file(path)?, path)
}
