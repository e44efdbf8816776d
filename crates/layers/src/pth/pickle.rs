//! A small pickle interpreter for the subset `torch.save` writes (protocols 2 to 5, binary
//! opcodes). It never imports or calls anything: `GLOBAL`/`STACK_GLOBAL` resolve against a fixed
//! allow-list ([`Global`]) and anything else is refused with [`PthError::ForbiddenGlobal`] the
//! moment it is named; `REDUCE`/`NEWOBJ` only "call" allowed globals, which build plain data
//! (dicts, tensor descriptions). `BUILD` state is dropped, persistent IDs become storage
//! references ([`StorageRef`]) whose bytes are read later by the container code.
//!
//! Containers live in an arena ([`Pickle::objs`]) and values refer to them by index, so values
//! are flat: cloning is cheap, self-referencing structures are harmless and dropping never
//! recurses. Every length field is checked against the bytes that remain before anything is
//! allocated, and the stack, memo and mark stack are capped, so a hostile or damaged stream ends
//! in an error after at most one pass over its bytes.

use std::collections::HashMap;
use std::rc::Rc;

use super::{PthDType, PthError};

/// Most values on the stack at once.
const MAX_STACK: usize = 1 << 20;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 20;
/// Deepest nesting of `MARK`s.
const MAX_MARKS: usize = 1 << 12;
/// Most dimensions of a tensor.
pub(crate) const MAX_NDIM: usize = 64;
/// Longest string key that dict insertion hashes to replace an existing entry (longer keys are
/// appended; keeps a stream that re-inserts one huge key from costing quadratic time).
const MAX_HASHED_KEY: usize = 256;

/// The `torch.save` magic number of the legacy format, as the little-endian bytes of `LONG1`.
pub(crate) const LEGACY_MAGIC: [u8; 10] =
    [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// A pickle value. Containers and torch objects are indices into [`Pickle::objs`].
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits: its little-endian two's-complement bytes.
    BigInt(Rc<[u8]>),
    /// A float; its value is not needed for state dicts, so it is not kept.
    Float,
    Str(Rc<str>),
    /// A bytes object; likewise only its presence is kept.
    Bytes,
    Obj(usize),
}

impl Value {
    /// A short description for error messages (never the contents, which may be huge).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) | Value::BigInt(_) => "an integer",
            Value::Float => "a float",
            Value::Str(_) => "a string",
            Value::Bytes => "bytes",
            Value::Obj(_) => "an object",
        }
    }
}

/// What an arena slot holds.
#[derive(Debug)]
pub(crate) enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Dict),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorSpec),
}

/// An insertion-ordered dict. Re-inserting a key (string up to [`MAX_HASHED_KEY`] bytes, int,
/// bool or None) replaces its value in place, as in Python.
#[derive(Debug, Default)]
pub(crate) struct Dict {
    pub(crate) entries: Vec<(Value, Value)>,
    index: HashMap<HKey, usize>,
}

#[derive(Debug, Hash, PartialEq, Eq)]
enum HKey {
    Str(Rc<str>),
    Int(i64),
    None,
}

impl Dict {
    fn insert(&mut self, k: Value, v: Value) {
        let h = match &k {
            Value::Str(s) if s.len() <= MAX_HASHED_KEY => Some(HKey::Str(s.clone())),
            Value::Int(i) => Some(HKey::Int(*i)),
            Value::Bool(b) => Some(HKey::Int(i64::from(*b))),
            Value::None => Some(HKey::None),
            _ => None,
        };
        if let Some(h) = h {
            if let Some(&i) = self.index.get(&h) {
                self.entries[i].1 = v;
                return;
            }
            self.index.insert(h, self.entries.len());
        }
        self.entries.push((k, v));
    }
}

/// The globals a checkpoint may name. Everything else is [`PthError::ForbiddenGlobal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    /// `collections.OrderedDict`: called with no arguments, makes an empty dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor` (old legacy files).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter` and `_rebuild_parameter_with_state`: return their tensor.
    RebuildParameter,
    /// `torch.Size`: returns its tuple.
    TorchSize,
    /// `torch.FloatStorage` etc., only meaningful inside a persistent ID.
    StorageType(PthDType),
    /// `torch.float32` etc. (may appear in tensor metadata); inert.
    Dtype,
}

fn resolve(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Global::RebuildParameter
        }
        ("torch", "Size") => Global::TorchSize,
        ("torch", storage) if storage.ends_with("Storage") => {
            Global::StorageType(PthDType::from_storage_name(storage)?)
        }
        ("torch", dtype) if PthDType::from_dtype_name(dtype).is_some() => Global::Dtype,
        _ => return None,
    })
}

/// A reference to (part of) a storage, from a persistent ID.
#[derive(Debug, Clone)]
pub(crate) struct StorageRef {
    /// Zip: the entry name under `data/`; legacy: the root key.
    pub(crate) key: Rc<str>,
    pub(crate) dtype: PthDType,
    /// Legacy views: the view's first element within the root storage.
    pub(crate) view_offset: usize,
    /// Legacy views: the view's length in elements.
    pub(crate) view_len: Option<usize>,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Debug, Clone)]
pub(crate) struct TensorSpec {
    pub(crate) storage: StorageRef,
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) stride: Vec<usize>,
}

/// The result of running one pickle stream.
#[derive(Debug)]
pub(crate) struct Pickle {
    /// The object `STOP` returned.
    pub(crate) root: Value,
    /// The arena that [`Value::Obj`] indices point into.
    pub(crate) objs: Vec<Obj>,
    /// Byte offset just past `STOP` (legacy files hold several pickles back to back).
    pub(crate) end: usize,
    /// Dtype of each storage key named by a persistent ID, in first-seen order.
    pub(crate) storages: Vec<(Rc<str>, PthDType)>,
}

impl Pickle {
    /// The object behind a value, if it is one.
    pub(crate) fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objs.get(*i),
            _ => None,
        }
    }
}

/// Runs the pickle stream starting at `data[start..]`; `entry` names it in errors.
pub(crate) fn parse(data: &[u8], start: usize, entry: &str) -> Result<Pickle, PthError> {
    let mut m = Machine {
        data,
        pos: start,
        op_pos: start,
        start,
        entry,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objs: Vec::new(),
        storages: Vec::new(),
        storage_index: HashMap::new(),
    };
    let root = m.run()?;
    Ok(Pickle {
        root,
        objs: m.objs,
        end: m.pos,
        storages: m.storages,
    })
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    start: usize,
    entry: &'a str,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objs: Vec<Obj>,
    storages: Vec<(Rc<str>, PthDType)>,
    storage_index: HashMap<Rc<str>, PthDType>,
}

type R<T> = Result<T, PthError>;

impl<'a> Machine<'a> {
    fn err(&self, reason: impl Into<String>) -> PthError {
        PthError::Pickle {
            file: String::new(),
            entry: self.entry.to_string(),
            offset: self.op_pos - self.start,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let remaining = self.data.len() - self.pos;
        if n > remaining {
            return Err(self.err(format!(
                "needs {n} more bytes but only {remaining} remain (truncated or damaged stream)"
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn arr<const N: usize>(&mut self) -> R<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len_u64(&mut self, v: u64) -> R<usize> {
        usize::try_from(v).map_err(|_| self.err(format!("length {v} does not fit in memory")))
    }

    fn line(&mut self) -> R<&'a str> {
        let data = self.data;
        let rest = &data[self.pos..];
        let Some(n) = rest.iter().take(512).position(|&b| b == b'\n') else {
            return Err(self.err("expected a newline-terminated name within 512 bytes"));
        };
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| self.err("name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) -> R<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("stack deeper than {MAX_STACK} values")));
        }
        self.stack.push(v);
        Ok(())
    }

    fn new_obj(&mut self, o: Obj) -> Value {
        self.objs.push(o);
        Value::Obj(self.objs.len() - 1)
    }

    fn push_obj(&mut self, o: Obj) -> R<()> {
        let v = self.new_obj(o);
        self.push(v)
    }

    fn pop(&mut self) -> R<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("pops from an empty stack (or across a MARK)"));
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }

    fn top(&self) -> R<&Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("needs a value on the stack but it is empty"));
        }
        Ok(self.stack.last().expect("checked non-empty"))
    }

    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return Err(self.err("needs a MARK but none is open"));
        };
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, idx: u32) -> R<()> {
        let v = self.top()?.clone();
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&idx) {
            return Err(self.err(format!("more than {MAX_MEMO} memo entries")));
        }
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> R<()> {
        let Some(v) = self.memo.get(&idx).cloned() else {
            return Err(self.err(format!("memo entry {idx} was never stored")));
        };
        self.push(v)
    }

    fn str_value(&self, bytes: &[u8]) -> R<Value> {
        let s = std::str::from_utf8(bytes).map_err(|_| self.err("string is not valid UTF-8"))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn unicode(&mut self, n: usize) -> R<()> {
        let b = self.take(n)?;
        let v = self.str_value(b)?;
        self.push(v)
    }

    fn latin1(&mut self, n: usize) -> R<()> {
        let s: String = self.take(n)?.iter().map(|&b| char::from(b)).collect();
        self.push(Value::Str(Rc::from(s)))
    }

    fn bytes(&mut self, n: usize) -> R<()> {
        self.take(n)?;
        self.push(Value::Bytes)
    }

    fn long(&mut self, n: usize) -> R<()> {
        let b = self.take(n)?;
        let v = if b.is_empty() {
            Value::Int(0)
        } else if b.len() <= 8 {
            let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
            let mut a = [fill; 8];
            a[..b.len()].copy_from_slice(b);
            Value::Int(i64::from_le_bytes(a))
        } else {
            Value::BigInt(Rc::from(b))
        };
        self.push(v)
    }

    fn global(&mut self, module: &str, name: &str) -> R<()> {
        match resolve(module, name) {
            Some(g) => self.push_obj(Obj::Global(g)),
            None => Err(PthError::ForbiddenGlobal {
                file: String::new(),
                entry: self.entry.to_string(),
                module: module.to_string(),
                name: name.to_string(),
            }),
        }
    }

    fn run(&mut self) -> R<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.err(format!("pickle protocol {p} (only 0 to 5 exist)")));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err(self.err(format!("MARKs nested deeper than {MAX_MARKS}")));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                b'}' => self.push_obj(Obj::Dict(Dict::default()))?,
                b']' | 0x8f => self.push_obj(Obj::List(Vec::new()))?,
                b')' => self.push_obj(Obj::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items))?;
                }
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items))?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = self.dict_from(items)?;
                    self.push_obj(Obj::Dict(d))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_obj(Obj::Tuple(items))?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.arr()?);
                    self.push(Value::Int(v.into()))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.arr()?);
                    self.push(Value::Int(v.into()))?;
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    self.long(n)?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.arr()?);
                    let n = usize::try_from(n).map_err(|_| self.err("negative LONG4 length"))?;
                    self.long(n)?;
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float)?;
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.arr()?);
                    self.unicode(n as usize)?;
                }
                0x8c => {
                    let n = self.u8()?;
                    self.unicode(n.into())?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.arr()?);
                    let n = self.len_u64(n)?;
                    self.unicode(n)?;
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.arr()?);
                    self.bytes(n as usize)?;
                }
                b'C' => {
                    let n = self.u8()?;
                    self.bytes(n.into())?;
                }
                0x8e | 0x96 => {
                    let n = u64::from_le_bytes(self.arr()?);
                    let n = self.len_u64(n)?;
                    self.bytes(n)?;
                }
                b'U' => {
                    let n = self.u8()?;
                    self.latin1(n.into())?;
                }
                b'T' => {
                    let n = i32::from_le_bytes(self.arr()?);
                    let n =
                        usize::try_from(n).map_err(|_| self.err("negative BINSTRING length"))?;
                    self.latin1(n)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i.into())?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.arr()?);
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| self.err("memo full"))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(i.into())?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.arr()?);
                    self.memo_get(i)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top_index()?;
                    match &mut self.objs[d] {
                        Obj::Dict(d) => d.insert(k, v),
                        _ => return Err(self.err("SETITEM on something that is not a dict")),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        return Err(self.err("SETITEMS with an odd number of items"));
                    }
                    let d = self.top_index()?;
                    let Obj::Dict(d) = &mut self.objs[d] else {
                        return Err(self.err("SETITEMS on something that is not a dict"));
                    };
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.insert(k, v);
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    let l = self.top_index()?;
                    match &mut self.objs[l] {
                        Obj::List(l) => l.push(v),
                        _ => return Err(self.err("APPEND to something that is not a list")),
                    }
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let l = self.top_index()?;
                    match &mut self.objs[l] {
                        Obj::List(l) => l.extend(items),
                        _ => return Err(self.err("APPENDS to something that is not a list or set")),
                    }
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.call(callable, args)?;
                    self.push(v)?;
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.call(cls, args)?;
                    self.push(v)?;
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    if !self.is_empty_dict(&kwargs) {
                        return Err(self.err("NEWOBJ_EX with keyword arguments"));
                    }
                    let v = self.call(cls, args)?;
                    self.push(v)?;
                }
                b'b' => {
                    // BUILD: the state (e.g. an OrderedDict's `_metadata`) is dropped; the
                    // object stays as it is.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = self.persistent_load(pid)?;
                    self.push_obj(Obj::Storage(s))?;
                }
                b'i' | b'o' => {
                    return Err(self.err(
                        "INST/OBJ (protocol-0 object construction) is not supported".to_string(),
                    ))
                }
                other => {
                    return Err(self.err(format!(
                        "unsupported opcode 0x{other:02x} ({:?}); torch.save writes binary \
                         pickles of protocol 2 or later",
                        char::from(other)
                    )))
                }
            }
        }
    }

    fn top_index(&self) -> R<usize> {
        match self.top()? {
            Value::Obj(i) => Ok(*i),
            _ => Err(self.err("needs a container on the stack")),
        }
    }

    fn is_empty_dict(&self, v: &Value) -> bool {
        matches!(v, Value::Obj(i) if matches!(&self.objs[*i], Obj::Dict(d) if d.entries.is_empty()))
    }

    fn dict_from(&self, items: Vec<Value>) -> R<Dict> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("DICT with an odd number of items"));
        }
        let mut d = Dict::default();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.insert(k, v);
        }
        Ok(d)
    }

    fn tuple(&self, v: &Value, what: &str) -> R<&[Value]> {
        match v {
            Value::Obj(i) => match &self.objs[*i] {
                Obj::Tuple(t) | Obj::List(t) => Ok(t),
                _ => Err(self.err(format!("{what}: expected a tuple"))),
            },
            _ => Err(self.err(format!("{what}: expected a tuple, got {}", v.kind()))),
        }
    }

    fn usize_of(&self, v: &Value, what: &str) -> R<usize> {
        match v {
            Value::Int(i) => usize::try_from(*i)
                .map_err(|_| self.err(format!("{what}: {i} is negative or too large"))),
            _ => Err(self.err(format!("{what}: expected an integer, got {}", v.kind()))),
        }
    }

    fn usizes(&self, v: &Value, what: &str) -> R<Vec<usize>> {
        let t = self.tuple(v, what)?;
        if t.len() > MAX_NDIM {
            return Err(self.err(format!(
                "{what}: {} dimensions (at most {MAX_NDIM})",
                t.len()
            )));
        }
        t.iter().map(|x| self.usize_of(x, what)).collect()
    }

    fn call(&mut self, callable: Value, args: Value) -> R<Value> {
        let g = match &callable {
            Value::Obj(i) => match &self.objs[*i] {
                Obj::Global(g) => *g,
                _ => return Err(self.err("REDUCE/NEWOBJ on something that is not a global")),
            },
            _ => return Err(self.err("REDUCE/NEWOBJ on something that is not a global")),
        };
        let args = self.tuple(&args, "arguments")?;
        match g {
            Global::OrderedDict => {
                if !args.is_empty() {
                    return Err(self.err("OrderedDict called with arguments"));
                }
                Ok(self.new_obj(Obj::Dict(Dict::default())))
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let (min, max) = if g == Global::RebuildTensorV2 {
                    (6, 7)
                } else {
                    (4, 4)
                };
                if args.len() < min || args.len() > max {
                    return Err(self.err(format!(
                        "{g:?} called with {} arguments (expected {min} to {max})",
                        args.len()
                    )));
                }
                let storage = match &args[0] {
                    Value::Obj(i) => match &self.objs[*i] {
                        Obj::Storage(s) => s.clone(),
                        _ => return Err(self.err("tensor rebuilt from something not a storage")),
                    },
                    _ => return Err(self.err("tensor rebuilt from something not a storage")),
                };
                let offset = self.usize_of(&args[1], "storage offset")?;
                let shape = self.usizes(&args[2], "size")?;
                let stride = self.usizes(&args[3], "stride")?;
                if shape.len() != stride.len() {
                    return Err(self.err(format!(
                        "size has {} dimensions but stride has {}",
                        shape.len(),
                        stride.len()
                    )));
                }
                Ok(self.new_obj(Obj::Tensor(TensorSpec {
                    storage,
                    offset,
                    shape,
                    stride,
                })))
            }
            Global::RebuildParameter => {
                let t = args.first().cloned();
                match t {
                    Some(Value::Obj(i)) if matches!(self.objs[i], Obj::Tensor(_)) => {
                        Ok(Value::Obj(i))
                    }
                    _ => Err(self.err("_rebuild_parameter without a tensor argument")),
                }
            }
            Global::TorchSize => match args.first() {
                Some(v) if args.len() == 1 => {
                    let t = self.tuple(v, "torch.Size")?.to_vec();
                    Ok(self.new_obj(Obj::Tuple(t)))
                }
                _ => Err(self.err("torch.Size takes one tuple")),
            },
            Global::StorageType(_) | Global::Dtype => {
                Err(self.err(format!("{g:?} cannot be called from a checkpoint")))
            }
        }
    }

    /// `('storage', StorageType, key, location, numel)` (zip) or
    /// `('storage', StorageType, root_key, location, size, view_metadata)` (legacy), where
    /// `view_metadata` is None or `(view_key, offset, view_size)`.
    fn persistent_load(&mut self, pid: Value) -> R<StorageRef> {
        let t = self.tuple(&pid, "persistent id")?.to_vec();
        if !matches!(t.first(), Some(Value::Str(s)) if &**s == "storage")
            || !(5..=6).contains(&t.len())
        {
            return Err(self.err(
                "persistent id is not ('storage', type, key, location, size[, view])".to_string(),
            ));
        }
        let dtype = match self.obj_ref(&t[1]) {
            Some(Obj::Global(Global::StorageType(d))) => *d,
            _ => return Err(self.err("persistent id: second item is not a storage type")),
        };
        let key: Rc<str> = match &t[2] {
            Value::Str(s) => s.clone(),
            Value::Int(i) => Rc::from(i.to_string()),
            _ => return Err(self.err("persistent id: storage key is not a string")),
        };
        let (view_offset, view_len) = match t.get(5) {
            None | Some(Value::None) => (0, None),
            Some(v) => {
                let vm = self.tuple(v, "view metadata")?;
                if vm.len() != 3 {
                    return Err(self.err("view metadata is not (key, offset, size)"));
                }
                let off = self.usize_of(&vm[1], "view offset")?;
                let len = self.usize_of(&vm[2], "view size")?;
                (off, Some(len))
            }
        };
        match self.storage_index.get(&key) {
            Some(d) if *d != dtype => {
                return Err(self.err(format!("storage {key:?} used as both {d:?} and {dtype:?}")))
            }
            Some(_) => {}
            None => {
                self.storage_index.insert(key.clone(), dtype);
                self.storages.push((key.clone(), dtype));
            }
        }
        Ok(StorageRef {
            key,
            dtype,
            view_offset,
            view_len,
        })
    }

    fn obj_ref(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objs.get(*i),
            _ => None,
        }
    }
}
