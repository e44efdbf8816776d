//! The containers around the pickle: telling the formats apart by their first bytes, the zip
//! format (`<name>/data.pkl`, `<name>/data/<key>`, `<name>/byteorder`), a zip that merely holds a
//! `.pth`/`.pt` somewhere (a wheel), and the legacy format of back-to-back pickles followed by
//! length-prefixed storages.
//!
//! Zip entries are read through the `zip` crate. An entry is never read past
//! 1032 times its compressed size (deflate's largest possible ratio) or [`MAX_FILE_BYTES`], and
//! buffers only grow with bytes actually produced, so declared sizes cannot force an allocation.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek, SeekFrom};

use zip::ZipArchive;

use super::pickle::{self, Obj, Value, LEGACY_MAGIC};
use super::tensor::{self, Storages};
use super::{
    LoadOptions, Pick, PthDType, PthError, PthFormat, ReadLimits, StateDict, MAX_FILE_BYTES,
};

/// The bounds of one read, and (for [`super::load_selected`]) the caller's choice of tensors.
pub(crate) struct Plan<'p, 'q> {
    pub(crate) limits: ReadLimits,
    pub(crate) pick: Option<&'q mut Pick<'p>>,
    /// Bytes of tensor storage read so far.
    pub(crate) data_read: u64,
}

impl Plan<'_, '_> {
    /// No bounds beyond [`MAX_FILE_BYTES`], every tensor read ([`super::load`]).
    pub(crate) fn unbounded() -> Self {
        Plan {
            limits: ReadLimits {
                max_pickle_bytes: MAX_FILE_BYTES,
                max_data_bytes: MAX_FILE_BYTES,
            },
            pick: None,
            data_read: 0,
        }
    }

    /// Bytes of tensor storage that may still be read.
    fn data_left(&self) -> u64 {
        self.limits.max_data_bytes.saturating_sub(self.data_read)
    }
}

/// Reads a checkpoint of any supported format. `nested`: whether a zip without `data.pkl` may
/// be searched for a `.pth`/`.pt` entry (only at the outermost level).
pub(crate) fn read(
    bytes: &[u8],
    opts: &LoadOptions,
    nested: bool,
    plan: &mut Plan<'_, '_>,
) -> Result<StateDict, PthError> {
    if bytes.is_empty() {
        return Err(not_checkpoint("the input is empty"));
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        let zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_err(e.to_string()))?;
        return read_zip(zip, bytes.len(), opts, nested, plan);
    }
    if bytes[0] == 0x80 {
        return read_legacy(bytes, opts, plan);
    }
    Err(not_checkpoint(describe_start(bytes)))
}

/// [`read`] on an open file of `len` bytes: a zip is read entry by entry through the file; a
/// legacy checkpoint is read whole, if it is within the plan's limits.
pub(crate) fn read_file(
    file: &mut std::fs::File,
    len: u64,
    opts: &LoadOptions,
    plan: &mut Plan<'_, '_>,
) -> Result<StateDict, PthError> {
    let io = |e: std::io::Error| not_checkpoint(format!("cannot read it: {e}"));
    let mut head = [0u8; 512];
    let n = read_up_to(file, &mut head).map_err(io)?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let reader = std::io::BufReader::new(file);
        let zip = ZipArchive::new(reader).map_err(|e| zip_err(e.to_string()))?;
        return read_zip(zip, len.min(usize::MAX as u64) as usize, opts, true, plan);
    }
    if head.first() != Some(&0x80) {
        return read(head, opts, true, plan);
    }
    let limit = plan
        .limits
        .max_pickle_bytes
        .saturating_add(plan.limits.max_data_bytes)
        .min(MAX_FILE_BYTES);
    if len > limit {
        return Err(PthError::TooLarge {
            file: String::new(),
            what: "this legacy-format checkpoint (read whole, unlike a zip one), more than the \
                   tensors asked for need; it"
                .into(),
            size: len,
            limit,
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    read_legacy(&bytes, opts, plan)
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn not_checkpoint(reason: impl Into<String>) -> PthError {
    PthError::NotCheckpoint {
        file: String::new(),
        reason: reason.into(),
    }
}

fn zip_err(reason: impl Into<String>) -> PthError {
    PthError::Zip {
        file: String::new(),
        reason: reason.into(),
    }
}

fn storage_err(key: &str, reason: impl Into<String>) -> PthError {
    PthError::Storage {
        file: String::new(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn describe_start(bytes: &[u8]) -> String {
    if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        return "a tar archive (the format of torch.save before PyTorch 0.1.10), which is not \
                supported"
            .into();
    }
    let head = &bytes[..bytes.len().min(16)];
    match std::str::from_utf8(head) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c.is_whitespace()) => format!(
            "it starts with the text {s:?}; expected a zip archive (\"PK\") or a binary pickle \
             (byte 0x80)"
        ),
        _ => format!(
            "it starts with the bytes {head:02x?}; expected a zip archive (\"PK\") or a binary \
             pickle (byte 0x80)"
        ),
    }
}

/// Reads a whole zip entry, bounded as the module docs say and by `bound` (what the caller
/// allows this entry, described by `why`). The declared size is checked before inflating.
fn read_entry<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    name: &str,
    bound: u64,
    why: &str,
) -> Result<Vec<u8>, PthError> {
    let f = zip
        .by_name(name)
        .map_err(|e| zip_err(format!("entry {name}: {e}")))?;
    let ratio_cap = f
        .compressed_size()
        .saturating_mul(1032)
        .saturating_add(1024)
        .min(MAX_FILE_BYTES);
    let cap = ratio_cap.min(bound);
    let declared = f.size();
    if declared > cap {
        let what = if cap < ratio_cap {
            format!("zip entry {name} ({why})")
        } else {
            format!(
                "zip entry {name} (declared size, compressed {} bytes)",
                f.compressed_size()
            )
        };
        return Err(PthError::TooLarge {
            file: String::new(),
            what,
            size: declared,
            limit: cap,
        });
    }
    let mut v = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut v)
        .map_err(|e| zip_err(format!("entry {name}: {e}")))?;
    if v.len() as u64 != declared {
        return Err(zip_err(format!(
            "entry {name}: holds {} bytes but declares {declared}",
            v.len()
        )));
    }
    Ok(v)
}

fn read_zip<R: Read + Seek>(
    mut zip: ZipArchive<R>,
    input_len: usize,
    opts: &LoadOptions,
    nested: bool,
    plan: &mut Plan<'_, '_>,
) -> Result<StateDict, PthError> {
    // Archive order; names that are not valid UTF-8 cannot be checkpoint entries.
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len());
    if let Some(pkl) = pkl {
        let prefix = &pkl[..pkl.len() - "data.pkl".len()];
        let order = format!("{prefix}byteorder");
        if names.contains(&order) {
            let b = read_entry(&mut zip, &order, 64, "a byte-order mark")?;
            match String::from_utf8_lossy(&b).trim() {
                "little" => {}
                "big" => {
                    return Err(PthError::BigEndian {
                        file: String::new(),
                        detail: format!("entry {order} says \"big\""),
                    })
                }
                other => {
                    return Err(zip_err(format!(
                        "entry {order} holds {:?}, expected \"little\"",
                        other.chars().take(32).collect::<String>()
                    )))
                }
            }
        }
        let data = read_entry(
            &mut zip,
            pkl,
            plan.limits.max_pickle_bytes,
            "the pickle, larger than any state dict's",
        )?;
        let p = pickle::parse(&data, 0, pkl)?;
        drop(data);
        let sel = tensor::select(&p, opts)?;
        let sel = tensor::apply_pick(sel, plan)?;
        drop(p);
        let key = sel.key.clone();
        let mut st = ZipStorages {
            zip: &mut zip,
            prefix: format!("{prefix}data/"),
            cache: HashMap::new(),
            read: 0,
            plan,
        };
        let tensors = tensor::materialise_all(sel, &mut st, input_len)?;
        return Ok(StateDict {
            tensors,
            format: PthFormat::Zip,
            entry: None,
            key,
        });
    }
    if !nested {
        return Err(not_checkpoint(
            "a zip archive without a data.pkl entry (checkpoints nested in a zip are only \
             looked for one level deep)",
        ));
    }
    let inner = names.iter().find(|n| {
        let l = n.to_ascii_lowercase();
        l.ends_with(".pth") || l.ends_with(".pt")
    });
    let Some(inner) = inner else {
        let some: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        return Err(not_checkpoint(format!(
            "a zip archive that holds neither a torch.save archive (an entry <name>/data.pkl) \
             nor a .pth/.pt file ({} entries{}{})",
            names.len(),
            if some.is_empty() { "" } else { ": " },
            some.join(", ") + if names.len() > 5 { ", ..." } else { "" }
        )));
    };
    let bound = plan
        .limits
        .max_pickle_bytes
        .saturating_add(plan.limits.max_data_bytes);
    let data = read_entry(
        &mut zip,
        inner,
        bound,
        "a checkpoint larger than the tensors asked for need",
    )?;
    let mut sd = read(&data, opts, false, plan).map_err(|e| e.in_file(inner))?;
    sd.entry = Some(inner.clone());
    Ok(sd)
}

/// Storages of a zip-format checkpoint, read on first use and dropped when released.
struct ZipStorages<'z, 'p, 'q, 'r, R> {
    zip: &'z mut ZipArchive<R>,
    prefix: String,
    cache: HashMap<String, Vec<u8>>,
    read: usize,
    plan: &'r mut Plan<'p, 'q>,
}

impl<R: Read + Seek> Storages for ZipStorages<'_, '_, '_, '_, R> {
    fn bytes(&mut self, key: &str, _dtype: PthDType) -> Result<&[u8], PthError> {
        if !self.cache.contains_key(key) {
            let name = format!("{}{key}", self.prefix);
            if self.zip.index_for_name(&name).is_none() {
                return Err(storage_err(key, format!("the archive has no entry {name}")));
            }
            let why = format!(
                "{} bytes of tensor data are allowed in all, {} already read",
                self.plan.limits.max_data_bytes, self.plan.data_read
            );
            let b = read_entry(self.zip, &name, self.plan.data_left(), &why)?;
            self.read += b.len();
            self.plan.data_read += b.len() as u64;
            self.cache.insert(key.to_string(), b);
        }
        Ok(&self.cache[key])
    }

    fn bytes_read(&self) -> usize {
        self.read
    }

    fn release(&mut self, key: &str) {
        self.cache.remove(key);
    }
}

/// Storages of a legacy checkpoint: slices of the input.
struct LegacyStorages<'a> {
    map: HashMap<String, &'a [u8]>,
}

impl Storages for LegacyStorages<'_> {
    fn bytes(&mut self, key: &str, _dtype: PthDType) -> Result<&[u8], PthError> {
        self.map
            .get(key)
            .copied()
            .ok_or_else(|| storage_err(key, "not in the file's list of storages"))
    }

    fn bytes_read(&self) -> usize {
        0
    }
}

fn read_legacy(
    bytes: &[u8],
    opts: &LoadOptions,
    plan: &mut Plan<'_, '_>,
) -> Result<StateDict, PthError> {
    let magic = pickle::parse(bytes, 0, "1 (magic number)")?;
    if !matches!(&magic.root, Value::BigInt(b) if **b == LEGACY_MAGIC) {
        return Err(not_checkpoint(
            "a pickle, but not one written by torch.save (it does not start with torch's magic \
             number)",
        ));
    }
    let proto = pickle::parse(bytes, magic.end, "2 (protocol version)")?;
    match proto.root {
        Value::Int(1001) => {}
        Value::Int(v) => {
            return Err(not_checkpoint(format!(
                "legacy torch.save protocol version {v}, only 1001 is supported"
            )))
        }
        ref other => {
            return Err(not_checkpoint(format!(
                "legacy protocol version is {}, expected the integer 1001",
                other.kind()
            )))
        }
    }
    let sys = pickle::parse(bytes, proto.end, "3 (system info)")?;
    if let Some(Obj::Dict(d)) = sys.obj(&sys.root) {
        let little = d
            .entries
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == "little_endian"));
        if let Some((_, Value::Bool(false))) = little {
            return Err(PthError::BigEndian {
                file: String::new(),
                detail: "system info says little_endian=False".into(),
            });
        }
    }
    let main = pickle::parse(bytes, sys.end, "4 (main object)")?;
    let keys = pickle::parse(bytes, main.end, "5 (storage keys)")?;
    let key_list: Vec<&str> = match keys.obj(&keys.root) {
        Some(Obj::List(l) | Obj::Tuple(l)) => l
            .iter()
            .map(|k| match k {
                Value::Str(s) => Ok(&**s),
                other => Err(not_checkpoint(format!(
                    "the legacy storage-key list holds {}, not strings",
                    other.kind()
                ))),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(not_checkpoint(
                "the fifth pickle of a legacy file is not the list of storage keys",
            ))
        }
    };
    let dtypes: HashMap<&str, PthDType> = main.storages.iter().map(|(k, d)| (&**k, *d)).collect();
    let mut map = HashMap::new();
    let mut pos = keys.end;
    for key in key_list {
        let Some(dtype) = dtypes.get(key) else {
            return Err(storage_err(
                key,
                "listed in the storage keys but no tensor refers to it, so its element type is \
                 unknown",
            ));
        };
        let remaining = bytes.len() - pos;
        if remaining < 8 {
            return Err(storage_err(
                key,
                format!(
                    "truncated: its element count needs 8 bytes at byte {pos}, {remaining} remain"
                ),
            ));
        }
        let count = u64::from_le_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"));
        pos += 8;
        let remaining = bytes.len() - pos;
        let nbytes = count
            .checked_mul(dtype.size() as u64)
            .filter(|&n| n <= remaining as u64)
            .ok_or_else(|| {
                storage_err(
                    key,
                    format!(
                        "claims {count} {dtype} elements but only {remaining} bytes remain in the file"
                    ),
                )
            })? as usize;
        map.insert(key.to_string(), &bytes[pos..pos + nbytes]);
        pos += nbytes;
    }
    if keys.end as u64 > plan.limits.max_pickle_bytes {
        return Err(PthError::TooLarge {
            file: String::new(),
            what: "the pickles of this legacy-format checkpoint".into(),
            size: keys.end as u64,
            limit: plan.limits.max_pickle_bytes,
        });
    }
    let sel = tensor::select(&main, opts)?;
    let sel = tensor::apply_pick(sel, plan)?;
    let key = sel.key.clone();
    let tensors = tensor::materialise_all(sel, &mut LegacyStorages { map }, bytes.len())?;
    Ok(StateDict {
        tensors,
        format: PthFormat::Legacy,
        entry: None,
        key,
    })
}
