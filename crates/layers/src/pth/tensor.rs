//! From an interpreted pickle to a [`StateDict`]: choosing the dict of tensors (the rules in the
//! [module docs](super)), checking each tensor's view against its storage, and copying it out
//! contiguous, row-major and widened ([`PthData`]).
//!
//! The total number of elements materialised is capped at twice the input's size in bytes
//! (plus 64 Ki), so shapes in a hostile pickle, or many views of one storage, cannot make the
//! reader allocate more than a small multiple of what it was given.

use super::pickle::{Obj, Pickle, TensorSpec, Value};
use super::{LoadOptions, PthDType, PthData, PthError, PthTensor, TensorInfo, NESTED_KEYS};

/// Gives the bytes of a storage by key.
pub(crate) trait Storages {
    /// All bytes of the storage `key`, whose elements are `dtype`.
    fn bytes(&mut self, key: &str, dtype: PthDType) -> Result<&[u8], PthError>;

    /// Bytes decompressed so far (beyond the input itself); they raise the element budget.
    fn bytes_read(&self) -> usize;

    /// The storage `key` is no longer needed (its tensors are copied out).
    fn release(&mut self, _key: &str) {}
}

/// The chosen state dict: names, tensor descriptions, and the key it was nested under.
pub(crate) struct Selected {
    pub(crate) tensors: Vec<(String, TensorSpec)>,
    pub(crate) key: Option<String>,
}

fn not_state_dict(reason: impl Into<String>) -> PthError {
    PthError::NotStateDict {
        file: String::new(),
        reason: reason.into(),
    }
}

fn dict_entries<'p>(p: &'p Pickle, v: &Value) -> Option<&'p [(Value, Value)]> {
    match p.obj(v) {
        Some(Obj::Dict(d)) => Some(&d.entries),
        _ => None,
    }
}

fn is_tensor(p: &Pickle, v: &Value) -> bool {
    matches!(p.obj(v), Some(Obj::Tensor(_)))
}

fn has_tensor(p: &Pickle, v: &Value) -> bool {
    dict_entries(p, v).is_some_and(|e| e.iter().any(|(_, v)| is_tensor(p, v)))
}

fn describe(p: &Pickle, v: &Value) -> String {
    match p.obj(v) {
        Some(Obj::Dict(d)) => {
            let keys: Vec<String> = d
                .entries
                .iter()
                .take(12)
                .map(|(k, _)| match k {
                    Value::Str(s) => format!("{:?}", s.chars().take(64).collect::<String>()),
                    other => other.kind().to_string(),
                })
                .collect();
            let more = if d.entries.len() > 12 { ", ..." } else { "" };
            format!(
                "a dict with no tensor values (keys: [{}{more}])",
                keys.join(", ")
            )
        }
        Some(Obj::List(_)) => "a list".into(),
        Some(Obj::Tuple(_)) => "a tuple".into(),
        Some(Obj::Tensor(_)) => "a single tensor, not a dict".into(),
        Some(_) => "an object".into(),
        None => v.kind().into(),
    }
}

/// Picks the state dict out of the checkpoint's top-level object.
pub(crate) fn select(p: &Pickle, opts: &LoadOptions) -> Result<Selected, PthError> {
    let root = &p.root;
    let (dict, key) = if let Some(k) = &opts.key {
        let Some(entries) = dict_entries(p, root) else {
            return Err(not_state_dict(format!(
                "key {k:?} was asked for, but the top-level object is {}",
                describe(p, root)
            )));
        };
        let Some((_, v)) = entries
            .iter()
            .find(|(kk, _)| matches!(kk, Value::Str(s) if **s == **k))
        else {
            return Err(not_state_dict(format!(
                "key {k:?} was asked for, but the top-level object is {}",
                describe(p, root)
            )));
        };
        if !has_tensor(p, v) {
            return Err(not_state_dict(format!(
                "the value under key {k:?} is {}",
                describe(p, v)
            )));
        }
        (v, Some(k.clone()))
    } else if has_tensor(p, root) {
        (root, None)
    } else {
        let entries = dict_entries(p, root).unwrap_or(&[]);
        let found = NESTED_KEYS.iter().find_map(|want| {
            entries.iter().find_map(|(k, v)| match k {
                Value::Str(s) if **s == **want && has_tensor(p, v) => Some((v, *want)),
                _ => None,
            })
        });
        match found {
            Some((v, k)) => (v, Some(k.to_string())),
            None => {
                return Err(not_state_dict(format!(
                    "the top-level object is {}, and none of the keys {NESTED_KEYS:?} holds a \
                     dict of tensors (name the key with LoadOptions::with_key)",
                    describe(p, root)
                )))
            }
        }
    };
    let entries = dict_entries(p, dict).expect("checked to be a dict");
    let mut tensors = Vec::new();
    for (k, v) in entries {
        let Some(Obj::Tensor(spec)) = p.obj(v) else {
            continue;
        };
        let Value::Str(name) = k else {
            return Err(not_state_dict(format!(
                "a tensor is stored under {}, not under a string name",
                k.kind()
            )));
        };
        tensors.push((name.to_string(), spec.clone()));
    }
    Ok(Selected { tensors, key })
}

/// The selection narrowed to what the plan's `pick` function chose, which sees every tensor's
/// name, dtype and shape before any data is read; the chosen tensors must fit the plan's
/// data limit.
pub(crate) fn apply_pick(
    mut sel: Selected,
    plan: &mut super::container::Plan<'_, '_>,
) -> Result<Selected, PthError> {
    if let Some(pick) = plan.pick.as_mut() {
        let infos: Vec<TensorInfo<'_>> = sel
            .tensors
            .iter()
            .map(|(name, spec)| TensorInfo {
                name,
                dtype: spec.storage.dtype,
                shape: &spec.shape,
            })
            .collect();
        let chosen = pick(&infos).map_err(|reason| PthError::Refused {
            file: String::new(),
            reason,
        })?;
        let mut keep = chosen.into_iter().chain(std::iter::repeat(false));
        sel.tensors.retain(|_| keep.next().unwrap_or(false));
    }
    let need: u64 = sel
        .tensors
        .iter()
        .map(|(name, spec)| {
            TensorInfo {
                name,
                dtype: spec.storage.dtype,
                shape: &spec.shape,
            }
            .bytes()
        })
        .fold(0u64, u64::saturating_add);
    if need > plan.limits.max_data_bytes {
        return Err(PthError::TooLarge {
            file: String::new(),
            what: format!("the {} tensors to read", sel.tensors.len()),
            size: need,
            limit: plan.limits.max_data_bytes,
        });
    }
    Ok(sel)
}

/// Copies every selected tensor out of its storage. `input_len` (plus whatever the storages
/// decompressed) sets the element budget.
pub(crate) fn materialise_all(
    sel: Selected,
    storages: &mut dyn Storages,
    input_len: usize,
) -> Result<Vec<(String, PthTensor)>, PthError> {
    let mut out = Vec::with_capacity(sel.tensors.len());
    let mut used = 0usize;
    // Tensors still to read from each storage: a storage is released after its last one.
    let mut uses: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (_, spec) in &sel.tensors {
        *uses.entry(spec.storage.key.to_string()).or_default() += 1;
    }
    for (name, spec) in sel.tensors {
        storages.bytes(&spec.storage.key, spec.storage.dtype)?;
        let budget = input_len
            .saturating_add(storages.bytes_read())
            .saturating_mul(2)
            .saturating_add(1 << 16);
        let mut left = budget.saturating_sub(used);
        let bytes = storages.bytes(&spec.storage.key, spec.storage.dtype)?;
        let before = left;
        let t = materialise(&spec, bytes, &mut left).map_err(|reason| PthError::Tensor {
            file: String::new(),
            name: name.clone(),
            reason,
        })?;
        used += before - left;
        out.push((name, t));
        let key = spec.storage.key.to_string();
        if let Some(n) = uses.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                storages.release(&key);
            }
        }
    }
    Ok(out)
}

fn materialise(spec: &TensorSpec, bytes: &[u8], budget: &mut usize) -> Result<PthTensor, String> {
    let dtype = spec.storage.dtype;
    let esize = dtype.size();
    let total = bytes.len() / esize;
    // The storage (legacy: the view of its root storage) as element range [base, base + avail).
    let base = spec.storage.view_offset;
    let avail = match spec.storage.view_len {
        Some(n) if base.checked_add(n).is_some_and(|end| end <= total) => n,
        None if base <= total => total - base,
        _ => {
            return Err(format!(
                "storage view at element {base} (length {:?}) is outside its root storage of {total} elements",
                spec.storage.view_len
            ))
        }
    };
    let numel = spec
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} has too many elements", spec.shape))?;
    if numel > *budget {
        return Err(format!(
            "shape {:?} ({numel} elements) exceeds what is left of the element budget ({} of \
             twice the input size in bytes)",
            spec.shape, *budget
        ));
    }
    *budget -= numel;
    if numel > 0 {
        // Largest element index the view touches must lie inside the storage.
        let last = spec
            .shape
            .iter()
            .zip(&spec.stride)
            .try_fold(spec.offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            });
        match last {
            Some(l) if l < avail => {}
            _ => {
                return Err(format!(
                    "view (offset {}, shape {:?}, stride {:?}) reaches past the end of its \
                     storage of {avail} {dtype} elements",
                    spec.offset, spec.shape, spec.stride
                ))
            }
        }
    }
    // In bounds when numel > 0 (checked above); an empty view reads nothing.
    let start = base.saturating_add(spec.offset).saturating_mul(esize);
    let elems = &bytes[start.min(bytes.len())..];
    let idx = Indices::new(&spec.shape, &spec.stride, numel);
    let data = match dtype {
        PthDType::F32 => PthData::F32(idx.map(|i| f32::from_le_bytes(arr(elems, i))).collect()),
        PthDType::F16 => PthData::F32(
            idx.map(|i| f16_to_f32(u16::from_le_bytes(arr(elems, i))))
                .collect(),
        ),
        PthDType::BF16 => PthData::F32(
            idx.map(|i| f32::from_bits(u32::from(u16::from_le_bytes(arr(elems, i))) << 16))
                .collect(),
        ),
        PthDType::F64 => PthData::F64(idx.map(|i| f64::from_le_bytes(arr(elems, i))).collect()),
        PthDType::I64 => PthData::I64(idx.map(|i| i64::from_le_bytes(arr(elems, i))).collect()),
        PthDType::I32 => PthData::I64(
            idx.map(|i| i64::from(i32::from_le_bytes(arr(elems, i))))
                .collect(),
        ),
        PthDType::I16 => PthData::I64(
            idx.map(|i| i64::from(i16::from_le_bytes(arr(elems, i))))
                .collect(),
        ),
        PthDType::I8 => PthData::I64(idx.map(|i| i64::from(elems[i] as i8)).collect()),
        PthDType::U8 => PthData::I64(idx.map(|i| i64::from(elems[i])).collect()),
        PthDType::Bool => PthData::I64(idx.map(|i| i64::from(elems[i] != 0)).collect()),
    };
    Ok(PthTensor {
        dtype,
        shape: spec.shape.clone(),
        data,
    })
}

/// The `N` bytes of element `i` (bounds were checked against the storage before).
fn arr<const N: usize>(elems: &[u8], i: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&elems[i * N..(i + 1) * N]);
    a
}

/// Element indices (relative to the view's first element) of a strided view, in row-major
/// order.
struct Indices<'a> {
    shape: &'a [usize],
    stride: &'a [usize],
    counter: Vec<usize>,
    next: usize,
    left: usize,
}

impl<'a> Indices<'a> {
    fn new(shape: &'a [usize], stride: &'a [usize], numel: usize) -> Self {
        Indices {
            shape,
            stride,
            counter: vec![0; shape.len()],
            next: 0,
            left: numel,
        }
    }
}

impl Iterator for Indices<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let cur = self.next;
        for d in (0..self.shape.len()).rev() {
            self.counter[d] += 1;
            // Wrapping: past the last element the odometer may step beyond the view.
            self.next = self.next.wrapping_add(self.stride[d]);
            if self.counter[d] < self.shape[d] {
                break;
            }
            self.next = self
                .next
                .wrapping_sub(self.stride[d].wrapping_mul(self.shape[d]));
            self.counter[d] = 0;
        }
        Some(cur)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Indices<'_> {}

/// IEEE half to single precision, exactly (subnormals, infinities and NaN included).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24; normalise.
            let shift = m.leading_zeros() - 21; // bring the top set bit to bit 10
            let m = (m << shift) & 0x3ff;
            let e = 127 - 15 + 1 - shift;
            sign | (e << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_conversion_is_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }
}
