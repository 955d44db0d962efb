//! The audit record's canonical encoding (Avro binary under audit_record.avsc) from Python
//! objects, and the hash chain, driven by the schema read at construction.
//!
//! A record field is read from the Python object by name (attribute, or key of a dict). Values:
//! str (str-valued enums included) for strings and enum symbols, int for int/long, `datetime`
//! for timestamp-micros longs (naive = UTC), bytes for bytes/fixed, bool, None for null, any
//! sequence for arrays, a dict or a sequence of (key, value) pairs for maps, written in the order
//! given (the reference encoder does the same). A union takes the first branch the value fits.
//!
//! Layout the chain relies on: the schema's first fields are chain_id, seq, prev_hash, body_len
//! and its last is record_hash; every field between is the body.
//! `record_hash = SHA-256(0x00 || chain_id seq prev_hash body_len body)` (RFC 6962 leaf hash).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pyo3::types::{PyBool, PyBytes, PyDateTime, PyDelta, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyTzInfo, PyType};
use pyo3::types::{PyDateAccess, PyDeltaAccess, PyTimeAccess, PyTzInfoAccess};
use sha2::{Digest, Sha256};

use crate::codec::MAX_DEPTH;
use crate::extract::Symbols;
use crate::schema::{Logical, Node, NodeId, Schema};
use crate::wire::{put_bytes, put_long};

pub const RECORD_PREFIX: u8 = 0x00;
pub const GENESIS_PREFIX: u8 = 0x03;

/// Per (record node, tuple class): the tuple index of each schema field the class has (a field it
/// lacks is read by name: the root record's chain fields, which an `AuditRecord` does not carry),
/// or None when the class is not a NamedTuple. The class is kept alive with its entry, so its
/// address cannot be reused by another class.
type Positions = HashMap<(NodeId, usize), (Py<PyType>, Option<Arc<Vec<Option<usize>>>>), FastHash>;

/// The positions cache's hasher: its keys are two small integers, so SipHash's cost (a large part
/// of a lookup, made for every nested record of every record) buys nothing.
#[derive(Default, Clone, Copy)]
struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

pub struct RecordEncoder {
    pub schema: Schema,
    positions: Mutex<Positions>,
    sym: Symbols,
    /// Field types of the root record, and its body range [body_start, hash_index).
    root_fields: Vec<NodeId>,
    body_start: usize,
    hash_index: usize,
}

/// An encoding error and the field path to it (innermost first, built while unwinding). Boxed:
/// every `encode` call returns a `Result<(), EncErr>`, which is then one word.
pub struct EncErr(Box<EncErrInner>);

struct EncErrInner {
    path: Vec<String>,
    msg: String,
    cause: Option<PyErr>,
}

impl EncErr {
    #[cold]
    fn new(msg: String) -> EncErr {
        EncErr(Box::new(EncErrInner { path: Vec::new(), msg, cause: None }))
    }

    #[cold]
    fn at(mut self, name: &str) -> EncErr {
        self.0.path.push(name.to_string());
        self
    }

    pub fn into_py(self) -> PyErr {
        let EncErrInner { path, msg, cause } = *self.0;
        let path: Vec<&str> = path.iter().rev().map(String::as_str).collect();
        let err = PyValueError::new_err(format!("cannot encode audit record field '{}': {}", path.join("."), msg));
        if let Some(cause) = cause {
            Python::attach(|py| err.set_cause(py, Some(cause)));
        }
        err
    }
}

impl From<PyErr> for EncErr {
    #[cold]
    fn from(e: PyErr) -> EncErr {
        EncErr(Box::new(EncErrInner { path: Vec::new(), msg: e.to_string(), cause: Some(e) }))
    }
}

#[cold]
#[inline(never)]
fn too_deep() -> EncErr {
    EncErr::new("nests too deeply".into())
}

#[cold]
#[inline(never)]
fn wrong_type(v: &Bound<'_, PyAny>, what: &str) -> EncErr {
    EncErr::new(format!("expected {what}, got {}", v.get_type().name().map(|n| n.to_string()).unwrap_or_default()))
}

/// `put_bytes` for the many short strings of a record: one capacity check, the length's varint
/// written in place when it is one byte.
#[inline(always)]
fn put_str(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() < 64 {
        out.reserve(1 + b.len());
        out.push((b.len() as u8) << 1);
        out.extend_from_slice(b);
    } else {
        put_bytes(out, b);
    }
}

fn err_at(path: &str, msg: String) -> PyErr {
    EncErr::new(msg).at(path).into_py()
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since 1970-01-01 UTC of a datetime (naive = UTC), as the reference `micros()`.
fn micros(dt: &Bound<'_, PyDateTime>) -> PyResult<i64> {
    let days = days_from_civil(i64::from(dt.get_year()), i64::from(dt.get_month()), i64::from(dt.get_day()));
    let secs = days * 86_400 + i64::from(dt.get_hour()) * 3600 + i64::from(dt.get_minute()) * 60 + i64::from(dt.get_second());
    let mut us = secs * 1_000_000 + i64::from(dt.get_microsecond());
    if let Some(tz) = dt.get_tzinfo() {
        if tz.is(&*PyTzInfo::utc(dt.py())?) {
            return Ok(us);
        }
        let off = dt.call_method0("utcoffset")?;
        if !off.is_none() {
            let off = off.cast_into::<PyDelta>()?;
            us -= (i64::from(off.get_days()) * 86_400 + i64::from(off.get_seconds())) * 1_000_000
                + i64::from(off.get_microseconds());
        }
    }
    Ok(us)
}

impl RecordEncoder {
    pub fn new(py: Python<'_>, text: &str) -> Result<RecordEncoder, String> {
        let schema = Schema::parse(text)?;
        let Node::Record { fields, .. } = schema.node(schema.root) else {
            return Err("the audit record schema must be a record".into());
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        if names.len() < 5 || names[..4] != ["chain_id", "seq", "prev_hash", "body_len"] || names[names.len() - 1] != "record_hash" {
            return Err("the audit record schema must start with chain_id, seq, prev_hash, body_len and end with record_hash".into());
        }
        let fixed32 = |id: NodeId| matches!(schema.node(id), Node::Fixed { size: 32, .. });
        if !fixed32(fields[2].ty) || !fixed32(fields[fields.len() - 1].ty) {
            return Err("prev_hash and record_hash must be 32-byte fixed".into());
        }
        if !matches!(schema.node(fields[0].ty), Node::String)
            || !matches!(schema.node(fields[1].ty), Node::Long(_))
            || !matches!(schema.node(fields[3].ty), Node::Long(_))
        {
            return Err("chain_id must be a string, seq and body_len longs".into());
        }
        let root_fields = fields.iter().map(|f| f.ty).collect::<Vec<_>>();
        let hash_index = root_fields.len() - 1;
        let sym = Symbols::new(py, &schema);
        Ok(RecordEncoder { schema, positions: Mutex::new(HashMap::with_hasher(FastHash)), sym, root_fields, body_start: 4, hash_index })
    }

    /// Tuple indexes of the record's fields when `obj` is a NamedTuple (None for a field it lacks).
    fn positions(&self, obj: &Bound<'_, PyAny>, record: NodeId) -> Option<Arc<Vec<Option<usize>>>> {
        if !obj.is_instance_of::<PyTuple>() {
            return None;
        }
        let ty = obj.get_type();
        let key = (record, ty.as_ptr() as usize);
        if let Some((_, p)) = self.positions.lock().expect("positions lock").get(&key) {
            return p.clone();
        }
        // asked without the lock held: Python code may run here (a metaclass), even this encoder again
        let p = self.class_positions(&ty, record);
        let mut cache = self.positions.lock().expect("positions lock");
        cache.entry(key).or_insert((ty.unbind(), p)).1.clone()
    }

    /// A field is read by position only where the class's attribute of its name is the NamedTuple
    /// accessor of that position (`_collections._tuplegetter`); else by name, as the reference
    /// reads it (a subclass may override a field with a property, a `_fields` may lie).
    fn class_positions(&self, ty: &Bound<'_, PyType>, record: NodeId) -> Option<Arc<Vec<Option<usize>>>> {
        let names: Vec<String> = ty.getattr("_fields").ok().and_then(|f| f.extract().ok())?;
        let Node::Record { fields, .. } = self.schema.node(record) else { return None };
        let getter = ty.py().import("_collections").and_then(|m| m.getattr("_tuplegetter")).ok()?;
        let accessor_of = |name: &str, k: usize| -> bool {
            let Ok(attr) = ty.getattr(name) else { return false };
            if !attr.get_type().is(&getter) {
                return false;
            }
            // _tuplegetter.__reduce__() is (type, (index, doc))
            let index = attr.call_method0("__reduce__").and_then(|r| r.get_item(1)?.get_item(0)?.extract::<usize>());
            index.is_ok_and(|i| i == k)
        };
        Some(Arc::new(
            fields.iter().map(|f| names.iter().position(|n| *n == f.name).filter(|&k| accessor_of(&f.name, k))).collect(),
        ))
    }

    fn field<'py>(&self, obj: &Bound<'py, PyAny>, record: NodeId, i: usize) -> PyResult<Bound<'py, PyAny>> {
        let name = &self.sym.names[record].as_ref().expect("record names")[i];
        if let Ok(d) = obj.cast::<PyDict>() {
            return Ok(d.get_item(name.bind(obj.py()))?.unwrap_or_else(|| obj.py().None().into_bound(obj.py())));
        }
        obj.getattr(name.bind(obj.py()))
    }

    fn accepts(&self, id: NodeId, v: &Bound<'_, PyAny>) -> bool {
        match self.schema.node(id) {
            Node::Null => v.is_none(),
            Node::Boolean => v.is_instance_of::<PyBool>(),
            Node::Int | Node::Long(Logical::None) => v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>(),
            Node::Long(_) => (v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>()) || v.is_instance_of::<PyDateTime>(),
            Node::Float | Node::Double => v.is_instance_of::<PyFloat>() || (v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>()),
            Node::String => v.is_instance_of::<PyString>(),
            Node::Bytes => v.is_instance_of::<PyBytes>(),
            Node::Fixed { size, .. } => v.cast::<PyBytes>().is_ok_and(|b| b.as_bytes().len() == *size),
            Node::Enum { symbols, .. } => v.cast::<PyString>().is_ok_and(|s| s.to_str().is_ok_and(|s| symbols.iter().any(|x| x == s))),
            Node::Array(_) => v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>(),
            Node::Map(_) => v.is_instance_of::<PyDict>() || v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>(),
            Node::Record { .. } => !v.is_none() && !v.is_instance_of::<PyString>() && !v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBytes>(),
            Node::Union(_) => false,
        }
    }

    pub fn encode(&self, id: NodeId, v: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: u32) -> Result<(), EncErr> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        let wrong = |what: &str| wrong_type(v, what);
        // A union writes its branch index, then the value with the branch's type in this same call
        // (one call per value, not two: most optional fields are unions with null).
        let (mut id, mut depth) = (id, depth);
        if let Node::Union(branches) = self.schema.node(id) {
            let (i, b) = branches
                .iter()
                .enumerate()
                .find(|(_, b)| self.accepts(**b, v))
                .ok_or_else(|| wrong("a value of one of the union's branches"))?;
            put_long(out, i as i64);
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(too_deep());
            }
            id = *b;
        }
        match self.schema.node(id) {
            Node::Null => {
                if !v.is_none() {
                    return Err(wrong("None"));
                }
            }
            Node::Boolean => out.push(u8::from(v.cast::<PyBool>().map_err(|_| wrong("bool"))?.is_true())),
            Node::Int => {
                if v.is_instance_of::<PyBool>() {
                    return Err(wrong("int"));
                }
                let n: i32 = v.extract().map_err(|_| wrong("an int of 32 bits"))?;
                put_long(out, i64::from(n))
            }
            Node::Long(logical) => {
                if let Ok(dt) = v.cast::<PyDateTime>() {
                    let us = micros(dt)?;
                    put_long(out, if *logical == Logical::TimestampMillis { us.div_euclid(1000) } else { us })
                } else {
                    if v.is_instance_of::<PyBool>() {
                        return Err(wrong("int"));
                    }
                    put_long(out, v.extract::<i64>().map_err(|_| wrong("an int of 64 bits"))?)
                }
            }
            Node::Float => out.extend_from_slice(&(v.extract::<f64>().map_err(|_| wrong("float"))? as f32).to_le_bytes()),
            Node::Double => out.extend_from_slice(&v.extract::<f64>().map_err(|_| wrong("float"))?.to_le_bytes()),
            Node::String => {
                let s = v.cast::<PyString>().map_err(|_| wrong("str"))?;
                put_str(out, s.to_str()?.as_bytes())
            }
            Node::Bytes => put_bytes(out, v.cast::<PyBytes>().map_err(|_| wrong("bytes"))?.as_bytes()),
            Node::Fixed { size, .. } => {
                let b = v.cast::<PyBytes>().map_err(|_| wrong("bytes"))?.as_bytes();
                if b.len() != *size {
                    return Err(EncErr::new(format!("expected {size} bytes, got {}", b.len())));
                }
                out.extend_from_slice(b)
            }
            Node::Enum { symbols, .. } => {
                let s = v.cast::<PyString>().map_err(|_| wrong("an enum symbol"))?.to_str()?;
                let i = symbols.iter().position(|x| x == s).ok_or_else(|| EncErr::new("not a symbol of the enum".into()))?;
                put_long(out, i as i64)
            }
            Node::Array(item) => {
                if v.is_instance_of::<PyString>() || v.is_instance_of::<PyBytes>() || v.is_instance_of::<PyDict>() {
                    return Err(wrong("a sequence"));
                }
                // a tuple or a list is read in place (most arrays of a record are tuples)
                if let Ok(t) = v.cast::<PyTuple>() {
                    if !t.is_empty() {
                        put_long(out, t.len() as i64);
                        for x in t.iter_borrowed() {
                            self.encode(*item, &x, out, depth + 1)?;
                        }
                    }
                } else if let Ok(l) = v.cast::<PyList>() {
                    // by index, and the length checked after: an item's encoding may run Python code
                    // that changes the list, and the block's count must be the items written
                    let n = l.len();
                    if n > 0 {
                        put_long(out, n as i64);
                        for i in 0..n {
                            self.encode(*item, &l.get_item(i)?, out, depth + 1)?;
                        }
                        if l.len() != n {
                            return Err(EncErr::new("the list changed size while it was encoded".into()));
                        }
                    }
                } else {
                    let n = v.len().map_err(|_| wrong("a sequence"))?;
                    if n > 0 {
                        put_long(out, n as i64);
                        let mut seen = 0usize;
                        for x in v.try_iter()?.take(n + 1) {
                            seen += 1;
                            if seen > n {
                                break;
                            }
                            self.encode(*item, &x?, out, depth + 1)?;
                        }
                        if seen != n {
                            return Err(EncErr::new(format!("the sequence's length is {n}, it holds {seen} or more")));
                        }
                    }
                }
                out.push(0)
            }
            Node::Map(val) => {
                if let Ok(d) = v.cast::<PyDict>() {
                    let n = d.len();
                    if n > 0 {
                        // from a snapshot of its items (PyO3's dict iterator panics if a value's
                        // encoding changes the dict's size), and refused if it did change
                        let items = d.items();
                        let pairs = items.iter().map(|p| {
                            let p = p.cast_into::<PyTuple>().expect("dict items are pairs");
                            (p.get_item(0).expect("two items"), p.get_item(1).expect("two items"))
                        });
                        self.encode_pairs(*val, pairs, n, out, depth)?;
                        if d.len() != n {
                            return Err(EncErr::new("the dict changed size while it was encoded".into()));
                        }
                    }
                } else if let Ok(t) = v.cast::<PyTuple>() {
                    // (key, value) pairs, each a tuple of two: read in place, all checked before any is written
                    if !t.iter_borrowed().all(|p| p.cast::<PyTuple>().is_ok_and(|p| p.len() == 2)) {
                        return Err(wrong("(key, value) pairs"));
                    }
                    if !t.is_empty() {
                        let pairs = t.iter_borrowed().map(|p| {
                            let p = p.cast::<PyTuple>().expect("checked above");
                            (p.get_item(0).expect("two items"), p.get_item(1).expect("two items"))
                        });
                        self.encode_pairs(*val, pairs, t.len(), out, depth)?;
                    }
                } else if v.is_instance_of::<PyList>() {
                    let pairs: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> =
                        v.try_iter()?.map(|p| p?.extract()).collect::<PyResult<_>>().map_err(|_| wrong("(key, value) pairs"))?;
                    if !pairs.is_empty() {
                        let n = pairs.len();
                        self.encode_pairs(*val, pairs.into_iter(), n, out, depth)?;
                    }
                } else {
                    return Err(wrong("a dict or (key, value) pairs"));
                }
                out.push(0)
            }
            Node::Record { fields, .. } => {
                if v.is_none() {
                    return Err(wrong("a record"));
                }
                let positions = self.positions(v, id);
                let tuple = v.cast::<PyTuple>().ok();
                for (i, f) in fields.iter().enumerate() {
                    let k = positions.as_ref().and_then(|p| p[i]);
                    self.encode_member(v, tuple, k, id, i, f.ty, out, depth + 1).map_err(|e| e.at(&f.name))?;
                }
            }
            // not reached: a union's branch that is a union is never taken (`accepts` refuses it)
            Node::Union(_) => return Err(wrong("a value of one of the union's branches")),
        }
        Ok(())
    }

    /// Field `i` of record `record` read from `v` (item `k` of its tuple when the class has it,
    /// else by name) and encoded with type `ty`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn encode_member(
        &self,
        v: &Bound<'_, PyAny>,
        tuple: Option<&Bound<'_, PyTuple>>,
        k: Option<usize>,
        record: NodeId,
        i: usize,
        ty: NodeId,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Result<(), EncErr> {
        if let (Some(k), Some(t)) = (k, tuple) {
            if k < t.len() {
                // SAFETY: k is within the tuple, whose items cannot change; borrowed while `t` lives
                let x = unsafe { t.get_borrowed_item_unchecked(k) };
                return self.encode(ty, &x, out, depth);
            }
        }
        let x = self.field(v, record, i)?;
        self.encode(ty, &x, out, depth)
    }

    /// A map's block of `n` (key, value) pairs (n > 0), without the final 0.
    fn encode_pairs<'py>(
        &self,
        val: NodeId,
        pairs: impl Iterator<Item = (Bound<'py, PyAny>, Bound<'py, PyAny>)>,
        n: usize,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Result<(), EncErr> {
        put_long(out, n as i64);
        for (k, x) in pairs {
            let k = k.cast::<PyString>().map_err(|_| EncErr::new("map keys must be str".into()))?;
            put_bytes(out, k.to_str()?.as_bytes());
            self.encode(val, &x, out, depth + 1)?;
        }
        Ok(())
    }

    /// The body: every field between body_len and record_hash.
    pub fn encode_body(&self, record: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
        let Node::Record { fields, .. } = self.schema.node(self.schema.root) else { unreachable!() };
        let positions = self.positions(record, self.schema.root);
        let tuple = record.cast::<PyTuple>().ok();
        for i in self.body_start..self.hash_index {
            let k = positions.as_ref().and_then(|p| p[i]);
            self.encode_member(record, tuple, k, self.schema.root, i, self.root_fields[i], out, 1)
                .map_err(|e| e.at(&fields[i].name).into_py())?;
        }
        Ok(())
    }

    pub fn chain_id(&self, record: &Bound<'_, PyAny>) -> PyResult<String> {
        let positions = self.positions(record, self.schema.root);
        let v = match (positions.as_ref().and_then(|p| p[0]), record.cast::<PyTuple>()) {
            (Some(k), Ok(t)) => t.get_item(k)?,
            _ => self.field(record, self.schema.root, 0)?,
        };
        Ok(v.cast::<PyString>().map_err(|_| err_at("chain_id", "expected str".into()))?.to_str()?.to_string())
    }
}

pub fn genesis(chain_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([GENESIS_PREFIX]);
    h.update(chain_id.as_bytes());
    h.finalize().into()
}

/// Seal one encoded body after (seq, prev): the record's bytes (hash last) and its hash.
pub fn seal(chain_id: &str, seq: i64, prev: &[u8; 32], body: &[u8], out: &mut Vec<u8>) -> [u8; 32] {
    let start = out.len();
    put_bytes(out, chain_id.as_bytes());
    put_long(out, seq);
    out.extend_from_slice(prev);
    put_long(out, body.len() as i64);
    out.extend_from_slice(body);
    let mut h = Sha256::new();
    h.update([RECORD_PREFIX]);
    h.update(&out[start..]);
    let digest: [u8; 32] = h.finalize().into();
    out.extend_from_slice(&digest);
    digest
}

pub fn head_from_py(v: &Bound<'_, PyAny>) -> PyResult<(i64, [u8; 32])> {
    let (size, hash): (i64, Vec<u8>) = v.extract().map_err(|_| PyTypeError::new_err("a chain head is a (size, head_hash) pair"))?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| PyValueError::new_err("a head hash is 32 bytes"))?;
    if size < 0 {
        return Err(PyValueError::new_err("a chain size is not negative"));
    }
    Ok((size, hash))
}

// ---------------------------------------------------------------- records from a facts tuple

/// Where one field of a record sealed from a facts tuple takes its value (see [`Layout`]).
pub enum Source {
    /// Encoded once, when the layout was built.
    Const(Vec<u8>),
    /// The `k`-th value of the batch (encoded once per call, with this field's type).
    Batch(usize),
    /// The `k`-th element of the item, encoded with the field's type.
    Item(usize),
    /// The `k`-th element of the item: bytes already encoded with the field's type, copied as is.
    Raw(usize),
    /// The `i`-th element of the facts tuple (the item's first element), encoded with the field's type.
    Fact(usize),
    /// A record, or a union of null and a record: null when `unless` reads None.
    Record { branch: Option<(i64, i64)>, unless: Option<Box<Source>>, fields: Vec<LayoutField> },
}

pub struct LayoutField {
    name: String,
    ty: NodeId,
    src: Source,
}

/// How to build an audit record's body from an item `(facts, chain_id, ...)` without a Python
/// record object: one [`Source`] per body field, in schema order. Built once from a Python spec:
/// a dict of field name -> `("const", value)`, `("batch", k)`, `("item", k)`, `("raw", k)`,
/// `("fact", i)` or `("record", unless_or_None, {sub-field: spec})`. Every field of the schema
/// must be named, and nothing else: a schema change that the spec does not follow is refused
/// when the layout is built, not discovered in a record.
pub struct Layout {
    fields: Vec<LayoutField>,
    /// (batch index, field type) of each `Batch` source, in the order of their use ids.
    batch_uses: Vec<(usize, NodeId)>,
}

impl RecordEncoder {
    pub fn layout(&self, spec: &Bound<'_, PyDict>) -> PyResult<Layout> {
        let Node::Record { fields, .. } = self.schema.node(self.schema.root) else { unreachable!() };
        let mut batch_uses = Vec::new();
        let body = &fields[self.body_start..self.hash_index];
        let fields = self.layout_fields(body, spec, &mut batch_uses, "")?;
        Ok(Layout { fields, batch_uses })
    }

    fn layout_fields(
        &self,
        fields: &[crate::schema::Field],
        spec: &Bound<'_, PyDict>,
        batch_uses: &mut Vec<(usize, NodeId)>,
        at: &str,
    ) -> PyResult<Vec<LayoutField>> {
        for k in spec.keys() {
            let k: String = k.extract()?;
            if !fields.iter().any(|f| f.name == k) {
                return Err(PyValueError::new_err(format!("layout: no field '{at}{k}' in the audit record schema")));
            }
        }
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            let s = spec
                .get_item(&f.name)?
                .ok_or_else(|| PyValueError::new_err(format!("layout: field '{at}{}' is not given", f.name)))?;
            let path = format!("{at}{}.", f.name);
            out.push(LayoutField { name: f.name.clone(), ty: f.ty, src: self.source(f.ty, &s, batch_uses, &path)? });
        }
        Ok(out)
    }

    fn source(&self, ty: NodeId, s: &Bound<'_, PyAny>, batch_uses: &mut Vec<(usize, NodeId)>, at: &str) -> PyResult<Source> {
        let bad = || PyValueError::new_err(format!("layout: '{}' has a bad spec", at.trim_end_matches('.')));
        let t = s.cast::<PyTuple>().map_err(|_| bad())?;
        let kind: String = t.get_item(0)?.extract().map_err(|_| bad())?;
        let index = || -> PyResult<usize> { t.get_item(1)?.extract::<usize>().map_err(|_| bad()) };
        Ok(match kind.as_str() {
            "const" => {
                let mut b = Vec::new();
                self.encode(ty, &t.get_item(1)?, &mut b, 1).map_err(|e| e.at(at.trim_end_matches('.')).into_py())?;
                Source::Const(b)
            }
            "batch" => {
                batch_uses.push((index()?, ty));
                Source::Batch(batch_uses.len() - 1)
            }
            "item" => Source::Item(index()?),
            "raw" => Source::Raw(index()?),
            "fact" => Source::Fact(index()?),
            "record" => {
                if t.len() != 3 {
                    return Err(bad());
                }
                let (rec, branch) = match self.schema.node(ty) {
                    Node::Record { .. } => (ty, None),
                    Node::Union(bs) => {
                        let null = bs.iter().position(|b| matches!(self.schema.node(*b), Node::Null));
                        let recs: Vec<usize> =
                            (0..bs.len()).filter(|i| matches!(self.schema.node(bs[*i]), Node::Record { .. })).collect();
                        match (null, recs.as_slice(), bs.len()) {
                            (Some(n), [r], 2) => (bs[*r], Some((n as i64, *r as i64))),
                            _ => return Err(bad()),
                        }
                    }
                    _ => return Err(bad()),
                };
                let unless_spec = t.get_item(1)?;
                let unless = if unless_spec.is_none() {
                    None
                } else {
                    if branch.is_none() {
                        return Err(bad()); // only a union with null can be null
                    }
                    match self.source(rec, &unless_spec, batch_uses, at)? {
                        s @ (Source::Item(_) | Source::Fact(_)) => Some(Box::new(s)),
                        _ => return Err(bad()),
                    }
                };
                let Node::Record { fields, .. } = self.schema.node(rec) else { unreachable!() };
                let sub = t.get_item(2)?;
                let sub = sub.cast::<PyDict>().map_err(|_| bad())?;
                Source::Record { branch, unless, fields: self.layout_fields(fields, sub, batch_uses, at)? }
            }
            _ => return Err(bad()),
        })
    }

    /// The batch values each `Batch` source reads, encoded with their field types.
    pub fn batch_values(&self, layout: &Layout, batch: &Bound<'_, PyTuple>) -> PyResult<Vec<Vec<u8>>> {
        layout
            .batch_uses
            .iter()
            .map(|(k, ty)| {
                let mut b = Vec::new();
                self.encode(*ty, &batch.get_item(*k)?, &mut b, 1).map_err(|e| e.at("(batch value)").into_py())?;
                Ok(b)
            })
            .collect()
    }

    /// The body of the record an item `(facts, chain_id, ...)` describes under `layout`.
    pub fn encode_item(
        &self,
        layout: &Layout,
        batch: &[Vec<u8>],
        item: &Bound<'_, PyTuple>,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let facts = item.get_item(0)?;
        let facts = facts.cast::<PyTuple>().map_err(|_| err_at("facts", "an item's first element is the facts tuple".into()))?;
        for f in &layout.fields {
            self.encode_source(f, batch, item, facts, out).map_err(|e| e.at(&f.name).into_py())?;
        }
        Ok(())
    }

    fn encode_source(
        &self,
        f: &LayoutField,
        batch: &[Vec<u8>],
        item: &Bound<'_, PyTuple>,
        facts: &Bound<'_, PyTuple>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncErr> {
        match &f.src {
            Source::Const(b) => out.extend_from_slice(b),
            Source::Batch(u) => out.extend_from_slice(&batch[*u]),
            Source::Item(k) => self.encode(f.ty, &item.get_item(*k)?, out, 1)?,
            Source::Fact(i) => self.encode(f.ty, &facts.get_item(*i)?, out, 1)?,
            Source::Raw(k) => {
                let v = item.get_item(*k)?;
                out.extend_from_slice(v.cast::<PyBytes>().map_err(|_| EncErr::new("expected encoded bytes".into()))?.as_bytes())
            }
            Source::Record { branch, unless, fields } => {
                if let (Some((null, _)), Some(u)) = (branch, unless) {
                    let v = match &**u {
                        Source::Item(k) => item.get_item(*k)?,
                        Source::Fact(i) => facts.get_item(*i)?,
                        _ => unreachable!("checked when the layout was built"),
                    };
                    if v.is_none() {
                        put_long(out, *null);
                        return Ok(());
                    }
                }
                if let Some((_, rec)) = branch {
                    put_long(out, *rec);
                }
                for sub in fields {
                    self.encode_source(sub, batch, item, facts, out).map_err(|e| e.at(&sub.name))?;
                }
            }
        }
        Ok(())
    }

    /// A value encoded with the type of the root record's field `name` (e.g. a decision, once per template).
    pub fn encode_field(&self, name: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        let Node::Record { fields, .. } = self.schema.node(self.schema.root) else { unreachable!() };
        let f = fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| PyValueError::new_err(format!("no field '{name}' in the audit record schema")))?;
        let mut out = Vec::new();
        self.encode(f.ty, v, &mut out, 1).map_err(|e| e.at(name).into_py())?;
        Ok(out)
    }
}

// ---------------------------------------------------------------- records from facts without Python objects

use crate::extract::Val;

/// What an item's element `k` is, for a record built in Rust (see `shadow.rs`): the same values,
/// at the same positions, as the Python item of `auditor.stream.factpath` (ITEM_*).
pub struct ValItem<'a, 'b> {
    pub facts: &'b [Val<'a>],
    /// ITEM_CHAIN .. ITEM_SUBJECT (positions 1..=7); position 0 is `facts`
    pub items: [Val<'b>; 8],
    /// ITEM_DECISION: the decision field, already encoded
    pub decision: &'b [u8],
}

pub const VAL_ITEM_DECISION: usize = 8;

impl RecordEncoder {
    /// `accepts` for a [`Val`]: the branch a union takes for the Python object the value would be.
    fn accepts_val(&self, id: NodeId, v: &Val<'_>) -> bool {
        match self.schema.node(id) {
            Node::Null => matches!(v, Val::Null),
            Node::Boolean => matches!(v, Val::Bool(_)),
            Node::Int | Node::Long(_) => matches!(v, Val::Long(_)),
            Node::Float | Node::Double => matches!(v, Val::Double(_) | Val::Long(_)),
            Node::String => matches!(v, Val::Str(_)),
            Node::Bytes => matches!(v, Val::Bytes(_)),
            Node::Fixed { size, .. } => matches!(v, Val::Bytes(b) if b.len() == *size),
            Node::Enum { symbols, .. } => matches!(v, Val::Str(s) if symbols.iter().any(|x| x == s)),
            Node::Array(_) | Node::Map(_) => matches!(v, Val::Tuple(_)),
            Node::Record { .. } => matches!(v, Val::Double(_) | Val::Tuple(_)),
            Node::Union(_) => false,
        }
    }

    /// `encode` for a [`Val`]: the bytes `encode` writes for the Python object the value would be.
    /// Err where `encode` would raise (the caller then leaves the event to Python).
    pub fn encode_val(&self, id: NodeId, v: &Val<'_>, out: &mut Vec<u8>, depth: u32) -> Result<(), ()> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        match (self.schema.node(id), v) {
            (Node::Null, Val::Null) => {}
            (Node::Boolean, Val::Bool(b)) => out.push(u8::from(*b)),
            (Node::Int, Val::Long(n)) => put_long(out, i64::from(i32::try_from(*n).map_err(|_| ())?)),
            (Node::Long(_), Val::Long(n)) => put_long(out, *n),
            (Node::Float, Val::Double(x)) => out.extend_from_slice(&(*x as f32).to_le_bytes()),
            (Node::Float, Val::Long(n)) => out.extend_from_slice(&(*n as f64 as f32).to_le_bytes()),
            (Node::Double, Val::Double(x)) => out.extend_from_slice(&x.to_le_bytes()),
            (Node::String, Val::Str(s)) => put_bytes(out, s.as_bytes()),
            (Node::Bytes, Val::Bytes(b)) => put_bytes(out, b),
            (Node::Fixed { size, .. }, Val::Bytes(b)) if b.len() == *size => out.extend_from_slice(b),
            (Node::Enum { symbols, .. }, Val::Str(s)) => {
                let i = symbols.iter().position(|x| x == s).ok_or(())?;
                put_long(out, i as i64)
            }
            (Node::Array(item), Val::Tuple(xs)) => {
                if !xs.is_empty() {
                    put_long(out, xs.len() as i64);
                    for x in xs {
                        self.encode_val(*item, x, out, depth + 1)?;
                    }
                }
                out.push(0)
            }
            (Node::Map(val), Val::Tuple(pairs)) => {
                if !pairs.is_empty() {
                    put_long(out, pairs.len() as i64);
                    for p in pairs {
                        let Val::Tuple(kv) = p else { return Err(()) };
                        let [Val::Str(k), x] = kv.as_slice() else { return Err(()) };
                        put_bytes(out, k.as_bytes());
                        self.encode_val(*val, x, out, depth + 1)?;
                    }
                }
                out.push(0)
            }
            (Node::Union(branches), _) => {
                let (i, b) = branches.iter().enumerate().find(|(_, b)| self.accepts_val(**b, v)).ok_or(())?;
                put_long(out, i as i64);
                self.encode_val(*b, v, out, depth + 1)?;
            }
            // a plain tuple as a record (no field names), a float as a double's int...: leave it to Python
            _ => return Err(()),
        }
        Ok(())
    }

    /// [`encode_item`](RecordEncoder::encode_item) from Rust values.
    pub fn encode_val_item(&self, layout: &Layout, batch: &[Vec<u8>], item: &ValItem<'_, '_>, out: &mut Vec<u8>) -> Result<(), ()> {
        for f in &layout.fields {
            self.encode_val_source(f, batch, item, out)?;
        }
        Ok(())
    }

    fn val_of<'v>(&self, src: &Source, item: &'v ValItem<'_, '_>) -> Result<&'v Val<'v>, ()> {
        match src {
            Source::Item(k) if (1..VAL_ITEM_DECISION).contains(k) => Ok(&item.items[*k]),
            Source::Fact(i) => item.facts.get(*i).ok_or(()),
            _ => Err(()),
        }
    }

    fn encode_val_source(&self, f: &LayoutField, batch: &[Vec<u8>], item: &ValItem<'_, '_>, out: &mut Vec<u8>) -> Result<(), ()> {
        match &f.src {
            Source::Const(b) => out.extend_from_slice(b),
            Source::Batch(u) => out.extend_from_slice(&batch[*u]),
            Source::Item(_) | Source::Fact(_) => self.encode_val(f.ty, self.val_of(&f.src, item)?, out, 1)?,
            Source::Raw(k) if *k == VAL_ITEM_DECISION => out.extend_from_slice(item.decision),
            Source::Raw(_) => return Err(()),
            Source::Record { branch, unless, fields } => {
                if let (Some((null, _)), Some(u)) = (branch, unless) {
                    if matches!(self.val_of(u, item)?, Val::Null) {
                        put_long(out, *null);
                        return Ok(());
                    }
                }
                if let Some((_, rec)) = branch {
                    put_long(out, *rec);
                }
                for sub in fields {
                    self.encode_val_source(sub, batch, item, out)?;
                }
            }
        }
        Ok(())
    }
}
