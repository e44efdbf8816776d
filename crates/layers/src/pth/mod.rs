//! Reading PyTorch checkpoints (`torch.save` files) without running any of their code.
//!
//! A `.pth`/`.pt` file is a Python pickle plus raw tensor storages. Python's own reader
//! (`torch.load` without `weights_only`) imports and calls whatever the pickle names, so a
//! downloaded checkpoint can run arbitrary commands. This module has its own small pickle
//! interpreter that only builds dicts, lists, tuples, numbers, strings and tensors, and only
//! accepts an allow-list of globals (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `_rebuild_tensor`, `_rebuild_parameter`, `torch.Size`, the `torch.*Storage` types and
//! `torch.<dtype>`); any other global is refused with [`PthError::ForbiddenGlobal`] as soon as
//! it is named. Every length and count is bounded by the input's size, so damaged or hostile
//! bytes give an error, never a panic or a huge allocation.
//!
//! Formats ([`PthFormat`]):
//! - **zip** (PyTorch >= 1.6): `<name>/data.pkl` with `<name>/data/<key>` storage entries and
//!   an optional `<name>/byteorder`;
//! - **legacy** (older `torch.save`, or `_use_new_zipfile_serialization=False`): a magic-number
//!   pickle, a protocol pickle, a system-info pickle, the main pickle, a pickle listing the
//!   storage keys, then each storage as an 8-byte little-endian element count and its bytes;
//! - **any other zip** (e.g. a Python wheel) that holds a `.pth` or `.pt` file of either format
//!   somewhere inside: the first such entry in archive order is read.
//!
//! Tensors: dtypes float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8 and
//! bool; views with any strides and storage offset (transposed, sliced, shared storages), 0-d
//! scalars and empty tensors. Each tensor is returned contiguous in row-major order, with the
//! data widened losslessly ([`PthData`]): float32/float16/bfloat16 as `f32`, float64 as `f64`,
//! integers and bool as `i64`. Only little-endian checkpoints are read.
//!
//! Which object is the state dict (see [`LoadOptions`]):
//! 1. with [`LoadOptions::key`] set, the top-level object must be a dict and the value under
//!    that key is the state dict;
//! 2. otherwise, if the top-level object is a dict with at least one tensor value, it is the
//!    state dict;
//! 3. otherwise, if it is a dict, the first of the keys [`NESTED_KEYS`] (`"state_dict"`,
//!    `"model_state_dict"`, `"model"`, `"net"`, `"module"`) whose value is a dict with a tensor
//!    in it is the state dict (a training checkpoint such as `{"model": ..., "epoch": 3}`).
//!
//! In the chosen dict, entries whose value is not a tensor (e.g. `"epoch": 3`) are skipped;
//! the tensors keep their order. Only tensors of the chosen dict are read from their storages.
//!
//! ```
//! use fracture_layers::pth::{load_bytes, PthData, PthDType, PthFormat};
//!
//! // A legacy-format checkpoint, written by hand: {"w": tensor([1.5, -2.0])}.
//! let mut file = Vec::new();
//! // magic number, protocol version 1001, system info {"little_endian": True}
//! file.extend(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
//! file.extend(b"\x80\x02M\xe9\x03.");
//! file.extend(b"\x80\x02}X\x0d\x00\x00\x00little_endian\x88s.");
//! // {"w": _rebuild_tensor_v2(storage, 0, (2,), (1,), False, OrderedDict())}
//! file.extend(b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(");
//! file.extend(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00k");
//! file.extend(b"X\x03\x00\x00\x00cpuK\x02NtQK\x00K\x02\x85K\x01\x85\x89");
//! file.extend(b"ccollections\nOrderedDict\n)RtRs.");
//! // storage keys ["k"], then storage "k": 2 elements
//! file.extend(b"\x80\x02]X\x01\x00\x00\x00ka.");
//! file.extend(2u64.to_le_bytes());
//! file.extend(1.5f32.to_le_bytes());
//! file.extend((-2.0f32).to_le_bytes());
//!
//! let sd = load_bytes(&file)?;
//! assert_eq!(sd.format, PthFormat::Legacy);
//! let w = sd.get("w").unwrap();
//! assert_eq!((w.dtype, w.shape.as_slice()), (PthDType::F32, &[2][..]));
//! assert_eq!(w.data, PthData::F32(vec![1.5, -2.0]));
//!
//! // The same pickle calling os.system is refused before anything runs.
//! let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.";
//! let mut bad = file[..45].to_vec(); // the three header pickles
//! bad.extend(evil);
//! let err = load_bytes(&bad).unwrap_err().to_string();
//! assert!(err.contains("os.system"), "{err}");
//! # Ok::<(), fracture_layers::pth::PthError>(())
//! ```

mod container;
mod error;
mod pickle;
mod tensor;

use std::io::Read;
use std::path::Path;

pub use error::PthError;

/// Largest file [`load`] reads (2 GiB); also the cap on a checkpoint extracted from a zip.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// Keys under which a training checkpoint commonly nests its state dict, in the order they are
/// tried (rule 3 of the [module docs](self)).
pub const NESTED_KEYS: [&str; 5] = ["state_dict", "model_state_dict", "model", "net", "module"];

/// The element type of a tensor as stored in the checkpoint.
///
/// ```
/// use fracture_layers::pth::PthDType;
/// assert_eq!(PthDType::BF16.size(), 2);
/// assert_eq!(PthDType::I64.name(), "int64");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PthDType {
    /// `torch.float32` (`FloatStorage`).
    F32,
    /// `torch.float16` (`HalfStorage`).
    F16,
    /// `torch.bfloat16` (`BFloat16Storage`).
    BF16,
    /// `torch.float64` (`DoubleStorage`).
    F64,
    /// `torch.int64` (`LongStorage`).
    I64,
    /// `torch.int32` (`IntStorage`).
    I32,
    /// `torch.int16` (`ShortStorage`).
    I16,
    /// `torch.int8` (`CharStorage`).
    I8,
    /// `torch.uint8` (`ByteStorage`).
    U8,
    /// `torch.bool` (`BoolStorage`).
    Bool,
}

impl PthDType {
    /// Bytes per element in the checkpoint.
    pub fn size(self) -> usize {
        match self {
            PthDType::F64 | PthDType::I64 => 8,
            PthDType::F32 | PthDType::I32 => 4,
            PthDType::F16 | PthDType::BF16 | PthDType::I16 => 2,
            PthDType::I8 | PthDType::U8 | PthDType::Bool => 1,
        }
    }

    /// PyTorch's name for it, e.g. `"float16"`.
    pub fn name(self) -> &'static str {
        match self {
            PthDType::F32 => "float32",
            PthDType::F16 => "float16",
            PthDType::BF16 => "bfloat16",
            PthDType::F64 => "float64",
            PthDType::I64 => "int64",
            PthDType::I32 => "int32",
            PthDType::I16 => "int16",
            PthDType::I8 => "int8",
            PthDType::U8 => "uint8",
            PthDType::Bool => "bool",
        }
    }

    pub(crate) fn from_storage_name(s: &str) -> Option<Self> {
        Some(match s {
            "FloatStorage" => PthDType::F32,
            "HalfStorage" => PthDType::F16,
            "BFloat16Storage" => PthDType::BF16,
            "DoubleStorage" => PthDType::F64,
            "LongStorage" => PthDType::I64,
            "IntStorage" => PthDType::I32,
            "ShortStorage" => PthDType::I16,
            "CharStorage" => PthDType::I8,
            "ByteStorage" => PthDType::U8,
            "BoolStorage" => PthDType::Bool,
            _ => return None,
        })
    }

    pub(crate) fn from_dtype_name(s: &str) -> Option<Self> {
        Some(match s {
            "float32" | "float" => PthDType::F32,
            "float16" | "half" => PthDType::F16,
            "bfloat16" => PthDType::BF16,
            "float64" | "double" => PthDType::F64,
            "int64" | "long" => PthDType::I64,
            "int32" | "int" => PthDType::I32,
            "int16" | "short" => PthDType::I16,
            "int8" => PthDType::I8,
            "uint8" => PthDType::U8,
            "bool" => PthDType::Bool,
            _ => return None,
        })
    }
}

impl std::fmt::Display for PthDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor's elements, contiguous and row-major, widened losslessly from the stored dtype:
/// float32, float16 and bfloat16 as `F32`; float64 as `F64`; int64, int32, int16, int8, uint8
/// and bool (0/1) as `I64`.
///
/// ```
/// use fracture_layers::pth::PthData;
/// let d = PthData::I64(vec![3, 4]);
/// assert_eq!(d.len(), 2);
/// assert_eq!(d.to_f32(), vec![3.0, 4.0]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum PthData {
    /// float32, float16, bfloat16.
    F32(Vec<f32>),
    /// float64.
    F64(Vec<f64>),
    /// Integer and bool dtypes.
    I64(Vec<i64>),
}

impl PthData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            PthData::F32(v) => v.len(),
            PthData::F64(v) => v.len(),
            PthData::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as `f32` (float64 and large integers are rounded).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            PthData::F32(v) => v.clone(),
            PthData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            PthData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// One tensor of a state dict.
///
/// ```
/// use fracture_layers::pth::{PthData, PthDType, PthTensor};
/// let t = PthTensor { dtype: PthDType::F16, shape: vec![2, 1], data: PthData::F32(vec![0.5, 1.0]) };
/// assert_eq!(t.numel(), 2);
/// assert_eq!(t.as_f32(), Some(&[0.5, 1.0][..]));
/// assert_eq!(t.as_i64(), None);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensor {
    /// The dtype in the checkpoint.
    pub dtype: PthDType,
    /// The shape (empty for a 0-d scalar).
    pub shape: Vec<usize>,
    /// The elements, row-major; `data.len()` is the product of `shape`.
    pub data: PthData,
}

impl PthTensor {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The elements as `f32`, converting if needed.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.to_f32()
    }

    /// The elements if the data is [`PthData::F32`].
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            PthData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if the data is [`PthData::I64`].
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            PthData::I64(v) => Some(v),
            _ => None,
        }
    }
}

/// How the checkpoint was stored.
///
/// ```
/// use fracture_layers::pth::PthFormat;
/// assert_ne!(PthFormat::Zip, PthFormat::Legacy);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PthFormat {
    /// The zip archive of PyTorch >= 1.6.
    Zip,
    /// The older single-file format of concatenated pickles and storages.
    Legacy,
}

/// A state dict: tensors by name, in the checkpoint's order.
///
/// ```
/// use fracture_layers::pth::{PthData, PthDType, PthFormat, PthTensor, StateDict};
/// let t = PthTensor { dtype: PthDType::I64, shape: vec![], data: PthData::I64(vec![17]) };
/// let sd = StateDict {
///     tensors: vec![("bn.num_batches_tracked".into(), t)],
///     format: PthFormat::Zip,
///     entry: None,
///     key: None,
/// };
/// assert_eq!(sd.get("bn.num_batches_tracked").unwrap().as_i64(), Some(&[17][..]));
/// assert_eq!(sd.names().collect::<Vec<_>>(), ["bn.num_batches_tracked"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StateDict {
    /// `(name, tensor)` pairs in order.
    pub tensors: Vec<(String, PthTensor)>,
    /// The format of the checkpoint that held them.
    pub format: PthFormat,
    /// For a checkpoint found inside another zip (e.g. a wheel): its path in that archive.
    pub entry: Option<String>,
    /// The top-level key the state dict was nested under, if it was (rules 1 and 3).
    pub key: Option<String>,
}

impl StateDict {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&PthTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PthTensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }
}

/// Options for [`load_with`] and [`load_bytes_with`].
///
/// ```
/// use fracture_layers::pth::LoadOptions;
/// let opts = LoadOptions::default().with_key("model");
/// assert_eq!(opts.key.as_deref(), Some("model"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Read the state dict from this top-level key instead of guessing (rule 1 of the
    /// [module docs](self)).
    pub key: Option<String>,
}

impl LoadOptions {
    /// Sets [`LoadOptions::key`].
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// A tensor as the checkpoint's pickle describes it, before any of its data is read: what
/// [`load_selected`] shows its `pick` function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorInfo<'a> {
    /// The state-dict name.
    pub name: &'a str,
    /// The dtype in the checkpoint.
    pub dtype: PthDType,
    /// The shape.
    pub shape: &'a [usize],
}

impl TensorInfo<'_> {
    /// Bytes of its elements in the checkpoint's dtype (saturating).
    pub fn bytes(&self) -> u64 {
        self.shape
            .iter()
            .fold(self.dtype.size() as u64, |a, &d| a.saturating_mul(d as u64))
    }
}

/// How much [`load_selected`] may read and inflate.
///
/// ```
/// use fracture_layers::pth::ReadLimits;
/// let l = ReadLimits::for_data(20_000_000);
/// assert_eq!(l.max_data_bytes, 20_000_000);
/// assert_eq!(l.max_pickle_bytes, ReadLimits::MAX_PICKLE_BYTES);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest pickle read (`data.pkl` of a zip; the pickles of a legacy file), in bytes.
    pub max_pickle_bytes: u64,
    /// Most bytes of tensor storage read (inflated from a zip, or held in a legacy file) in
    /// all, and the most the picked tensors may hold.
    pub max_data_bytes: u64,
}

impl ReadLimits {
    /// The default pickle bound, 16 MiB: a state dict's pickle takes a few hundred bytes per
    /// tensor (EfficientNet-Lite0's 296 tensors: 26 kB).
    pub const MAX_PICKLE_BYTES: u64 = 16 << 20;

    /// [`ReadLimits::MAX_PICKLE_BYTES`] and at most `max_data_bytes` of tensor data.
    pub fn for_data(max_data_bytes: u64) -> Self {
        ReadLimits {
            max_pickle_bytes: Self::MAX_PICKLE_BYTES,
            max_data_bytes,
        }
    }
}

/// What [`load_selected`]'s `pick` function sees (every tensor of the state dict, before any
/// data is read) and returns: for each, whether to read it, or an error that stops the load.
pub type Pick<'p> = dyn FnMut(&[TensorInfo<'_>]) -> Result<Vec<bool>, String> + 'p;

/// Reads the state dict of the checkpoint at `path` as [`load_with`] does, but bounded for a
/// known architecture: `pick` sees the names, dtypes and shapes of every tensor before any
/// tensor data is read, and says which to read (or refuses the file with its message, as
/// [`PthError::Refused`]); only those are read and returned. At most
/// [`ReadLimits::max_pickle_bytes`] of pickle and [`ReadLimits::max_data_bytes`] of tensor
/// storage are read or inflated, each zip entry's declared size being checked before it is
/// inflated; a storage is dropped as soon as the tensors read from it are copied out. A zip
/// checkpoint is read from the file entry by entry, never whole; a legacy one is read whole,
/// so it may be no larger than the two limits together.
///
/// ```no_run
/// use fracture_layers::pth::{load_selected, LoadOptions, ReadLimits};
/// let mut pick = |ts: &[fracture_layers::pth::TensorInfo<'_>]| {
///     Ok(ts.iter().map(|t| !t.name.starts_with("_fc.")).collect())
/// };
/// let sd = load_selected("weights.pth".as_ref(), &LoadOptions::default(),
///     ReadLimits::for_data(40_000_000), &mut pick)?;
/// # Ok::<(), fracture_layers::pth::PthError>(())
/// ```
pub fn load_selected(
    path: &Path,
    opts: &LoadOptions,
    limits: ReadLimits,
    pick: &mut Pick<'_>,
) -> Result<StateDict, PthError> {
    let io = |source| PthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let label = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut plan = container::Plan {
        limits,
        pick: Some(pick),
        data_read: 0,
    };
    container::read_file(&mut file, meta.len(), opts, &mut plan).map_err(|e| e.in_file(&label))
}

/// Reads the state dict of the checkpoint at `path` (any supported format; see the
/// [module docs](self)). Refuses files over [`MAX_FILE_BYTES`]; errors name the file.
///
/// ```no_run
/// let sd = fracture_layers::pth::load("efficientnet-lite0.pth".as_ref())?;
/// println!("{} tensors", sd.len());
/// # Ok::<(), fracture_layers::pth::PthError>(())
/// ```
pub fn load(path: &Path) -> Result<StateDict, PthError> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<StateDict, PthError> {
    let io = |source| PthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let label = path.display().to_string();
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(too_large(&label, "the file", size));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(&label, "the file", bytes.len() as u64));
    }
    container::read(&bytes, opts, true, &mut container::Plan::unbounded())
        .map_err(|e| e.in_file(&label))
}

/// Reads the state dict of a checkpoint held in memory; errors call it `<bytes>`. See the
/// [module docs](self) for an example.
pub fn load_bytes(bytes: &[u8]) -> Result<StateDict, PthError> {
    load_bytes_with(bytes, &LoadOptions::default())
}

/// [`load_bytes`] with options.
pub fn load_bytes_with(bytes: &[u8], opts: &LoadOptions) -> Result<StateDict, PthError> {
    container::read(bytes, opts, true, &mut container::Plan::unbounded())
        .map_err(|e| e.in_file("<bytes>"))
}

fn too_large(file: &str, what: &str, size: u64) -> PthError {
    PthError::TooLarge {
        file: file.to_string(),
        what: what.to_string(),
        size,
        limit: MAX_FILE_BYTES,
    }
}
