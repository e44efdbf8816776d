//! The containers around the pickle: telling the formats apart by their first bytes, the zip
//! format (`<name>/data.pkl`, `<name>/data/<key>`, `<name>/byteorder`), a zip that merely holds a
//! `.pth`/`.pt` somewhere (a wheel), and the legacy format of back-to-back pickles followed by
//! length-prefixed storages.
//!
//! Zip entries are read through the `zip` crate. An entry is never read past
//! 1032 times its compressed size (deflate's largest possible ratio) or [`MAX_FILE_BYTES`], and
//! buffers only grow with bytes actually produced, so declared sizes cannot force an allocation.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use zip::ZipArchive;

use super::pickle::{self, Obj, Value, LEGACY_MAGIC};
use super::tensor::{self, Storages};
use super::{LoadOptions, PthDType, PthError, PthFormat, StateDict, MAX_FILE_BYTES};

/// Reads a checkpoint of any supported format. `nested`: whether a zip without `data.pkl` may
/// be searched for a `.pth`/`.pt` entry (only at the outermost level).
pub(crate) fn read(bytes: &[u8], opts: &LoadOptions, nested: bool) -> Result<StateDict, PthError> {
    if bytes.is_empty() {
        return Err(not_checkpoint("the input is empty"));
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return read_zip(bytes, opts, nested);
    }
    if bytes[0] == 0x80 {
        return read_legacy(bytes, opts);
    }
    Err(not_checkpoint(describe_start(bytes)))
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

type Zip<'a> = ZipArchive<Cursor<&'a [u8]>>;

/// Reads a whole zip entry, bounded as the module docs say.
fn read_entry(zip: &mut Zip<'_>, name: &str) -> Result<Vec<u8>, PthError> {
    let f = zip
        .by_name(name)
        .map_err(|e| zip_err(format!("entry {name}: {e}")))?;
    let cap = f
        .compressed_size()
        .saturating_mul(1032)
        .saturating_add(1024)
        .min(MAX_FILE_BYTES);
    let declared = f.size();
    if declared > cap {
        return Err(PthError::TooLarge {
            file: String::new(),
            what: format!(
                "zip entry {name} (declared size, compressed {} bytes)",
                f.compressed_size()
            ),
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

fn read_zip(bytes: &[u8], opts: &LoadOptions, nested: bool) -> Result<StateDict, PthError> {
    let mut zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_err(e.to_string()))?;
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
            let b = read_entry(&mut zip, &order)?;
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
        let data = read_entry(&mut zip, pkl)?;
        let p = pickle::parse(&data, 0, pkl)?;
        let sel = tensor::select(&p, opts)?;
        let key = sel.key.clone();
        let mut st = ZipStorages {
            zip: &mut zip,
            prefix: format!("{prefix}data/"),
            cache: HashMap::new(),
            read: 0,
        };
        let tensors = tensor::materialise_all(sel, &mut st, bytes.len())?;
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
    let data = read_entry(&mut zip, inner)?;
    let mut sd = read(&data, opts, false).map_err(|e| e.in_file(inner))?;
    sd.entry = Some(inner.clone());
    Ok(sd)
}

/// Storages of a zip-format checkpoint, read on first use.
struct ZipStorages<'z, 'a> {
    zip: &'z mut Zip<'a>,
    prefix: String,
    cache: HashMap<String, Vec<u8>>,
    read: usize,
}

impl Storages for ZipStorages<'_, '_> {
    fn bytes(&mut self, key: &str, _dtype: PthDType) -> Result<&[u8], PthError> {
        if !self.cache.contains_key(key) {
            let name = format!("{}{key}", self.prefix);
            if self.zip.index_for_name(&name).is_none() {
                return Err(storage_err(key, format!("the archive has no entry {name}")));
            }
            let b = read_entry(self.zip, &name)?;
            self.read += b.len();
            self.cache.insert(key.to_string(), b);
        }
        Ok(&self.cache[key])
    }

    fn bytes_read(&self) -> usize {
        self.read
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

fn read_legacy(bytes: &[u8], opts: &LoadOptions) -> Result<StateDict, PthError> {
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
    let sel = tensor::select(&main, opts)?;
    let key = sel.key.clone();
    let tensors = tensor::materialise_all(sel, &mut LegacyStorages { map }, bytes.len())?;
    Ok(StateDict {
        tensors,
        format: PthFormat::Legacy,
        entry: None,
        key,
    })
}
