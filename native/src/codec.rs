//! Strict decoding of an Avro body under a writer schema, written out in the reader schema's
//! canonical form in the same pass.
//!
//! A [`Program`] is compiled once per (writer, reader) pair: identity steps when the writer is the
//! reader, Avro schema-resolution steps otherwise (fields matched by name or alias, reader-only
//! fields filled from their defaults, writer-only fields validated and dropped, enum symbols by
//! name, union branches by type, the spec's numeric and string/bytes promotions).
//!
//! Running it over a body validates every byte and writes the canonical encoding: minimal
//! varints, each array or map as one block (`count, items, 0`), map entries sorted by key bytes.
//! Every valid encoding is accepted, including the spec's blocked form (a negative count followed
//! by the block's byte size, as Apache Avro Java's BlockingBinaryEncoder writes it). Refused, with
//! no re-encoding to compare: non-minimal or over-long varints, counts and lengths the rest of the
//! body cannot hold, block sizes that do not match their items, booleans other than 0/1, union and
//! enum indexes out of range, invalid UTF-8, duplicate map keys, nesting deeper than
//! [`MAX_DEPTH`], and trailing bytes.

use std::collections::HashMap;

use serde_json::Value;

use crate::schema::{Node, NodeId, Schema};
use crate::wire::{put_bytes, put_long, varint_bytes, Cursor, Fault, Located};

pub type ActId = usize;

/// Deepest nesting of records, arrays, maps and unions a value may have.
pub const MAX_DEPTH: u32 = 64;
/// Items of a type that takes no bytes (null, empty record) an array may hold in all.
pub const MAX_ZERO_SIZE_ITEMS: u64 = 1 << 16;

#[derive(Debug, Clone)]
enum Act {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    IntToLong,
    IntToFloat,
    IntToDouble,
    LongToFloat,
    LongToDouble,
    FloatToDouble,
    StrToBytes,
    BytesToStr,
    Fixed(usize),
    /// Writer symbol index -> reader symbol index (None: unknown to the reader, no default).
    Enum(Vec<Option<u32>>),
    Array { items: ActId, min: usize },
    Map { values: ActId, min: usize },
    Record(Box<RecordAct>),
    /// Writer union -> reader union: per writer branch, the reader branch and its step.
    UnionToUnion(Vec<Option<(u32, ActId)>>),
    /// Writer union -> reader non-union: per writer branch, its step.
    UnionToOne(Vec<Option<ActId>>),
    /// Writer non-union -> reader union: the reader branch and the step.
    OneToUnion(u32, ActId),
    Placeholder,
}

#[derive(Debug, Clone)]
struct RecordAct {
    /// In writer order: (step, reader slot or None to drop, field name for error paths).
    fields: Vec<(ActId, Option<usize>, String)>,
    /// Per reader field: the canonical bytes of its default (used when the writer lacks it).
    defaults: Vec<Option<Vec<u8>>>,
    /// Writer field i is reader field i for every i: write straight through.
    identity: bool,
}

#[derive(Debug, Clone)]
pub struct Program {
    acts: Vec<Act>,
    root: ActId,
}

struct Compiler<'s> {
    w: &'s Schema,
    r: &'s Schema,
    acts: Vec<Act>,
    memo: HashMap<(NodeId, NodeId), ActId>,
}

fn same_kind(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Record { .. }, Node::Record { .. })
        | (Node::Enum { .. }, Node::Enum { .. })
        | (Node::Fixed { .. }, Node::Fixed { .. }) => a.short_name() == b.short_name(),
        (Node::Long(_), Node::Long(_)) => true,
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

fn promotable(w: &Node, r: &Node) -> bool {
    matches!(
        (w, r),
        (Node::Int, Node::Long(_))
            | (Node::Int, Node::Float)
            | (Node::Int, Node::Double)
            | (Node::Long(_), Node::Float)
            | (Node::Long(_), Node::Double)
            | (Node::Float, Node::Double)
            | (Node::String, Node::Bytes)
            | (Node::Bytes, Node::String)
    )
}

impl<'s> Compiler<'s> {
    fn push(&mut self, a: Act) -> ActId {
        self.acts.push(a);
        self.acts.len() - 1
    }

    fn reader_branch(&self, w: NodeId, branches: &[NodeId]) -> Option<(u32, NodeId)> {
        let wn = self.w.node(w);
        let exact = branches.iter().position(|&b| same_kind(wn, self.r.node(b)));
        let named_any = branches.iter().position(|&b| {
            let rn = self.r.node(b);
            wn.short_name().is_some() && std::mem::discriminant(wn) == std::mem::discriminant(rn)
        });
        let promo = branches.iter().position(|&b| promotable(wn, self.r.node(b)));
        exact.or(named_any).or(promo).map(|i| (i as u32, branches[i]))
    }

    fn compile(&mut self, w: NodeId, r: NodeId) -> Result<ActId, String> {
        if let Some(&id) = self.memo.get(&(w, r)) {
            return Ok(id);
        }
        let id = self.push(Act::Placeholder);
        self.memo.insert((w, r), id);
        let act = match self.build(w, r) {
            Ok(a) => a,
            Err(e) => {
                self.memo.remove(&(w, r));
                return Err(e);
            }
        };
        self.acts[id] = act;
        Ok(id)
    }

    fn build(&mut self, w: NodeId, r: NodeId) -> Result<Act, String> {
        let (wn, rn) = (self.w.node(w).clone(), self.r.node(r).clone());
        Ok(match (&wn, &rn) {
            (Node::Union(wb), Node::Union(rb)) => {
                let mut steps = Vec::with_capacity(wb.len());
                for &b in wb {
                    steps.push(match self.reader_branch(b, rb) {
                        Some((i, rnode)) => self.compile(b, rnode).ok().map(|a| (i, a)),
                        None => None,
                    });
                }
                Act::UnionToUnion(steps)
            }
            (Node::Union(wb), _) => {
                let mut steps = Vec::with_capacity(wb.len());
                for &b in wb {
                    steps.push(self.compile(b, r).ok());
                }
                Act::UnionToOne(steps)
            }
            (_, Node::Union(rb)) => {
                let (i, rnode) = self
                    .reader_branch(w, rb)
                    .ok_or_else(|| format!("writer type {} matches no branch of the reader's union", wn.kind()))?;
                Act::OneToUnion(i, self.compile(w, rnode)?)
            }
            (Node::Null, Node::Null) => Act::Null,
            (Node::Boolean, Node::Boolean) => Act::Bool,
            (Node::Int, Node::Int) => Act::Int,
            (Node::Long(_), Node::Long(_)) => Act::Long,
            (Node::Float, Node::Float) => Act::Float,
            (Node::Double, Node::Double) => Act::Double,
            (Node::Bytes, Node::Bytes) => Act::Bytes,
            (Node::String, Node::String) => Act::Str,
            (Node::Int, Node::Long(_)) => Act::IntToLong,
            (Node::Int, Node::Float) => Act::IntToFloat,
            (Node::Int, Node::Double) => Act::IntToDouble,
            (Node::Long(_), Node::Float) => Act::LongToFloat,
            (Node::Long(_), Node::Double) => Act::LongToDouble,
            (Node::Float, Node::Double) => Act::FloatToDouble,
            (Node::String, Node::Bytes) => Act::StrToBytes,
            (Node::Bytes, Node::String) => Act::BytesToStr,
            (Node::Fixed { size: ws, .. }, Node::Fixed { size: rs, .. }) => {
                if ws != rs {
                    return Err(format!("fixed of {ws} bytes cannot be read as fixed of {rs}"));
                }
                Act::Fixed(*ws)
            }
            (Node::Enum { symbols: wsyms, .. }, Node::Enum { symbols: rsyms, default, .. }) => Act::Enum(
                wsyms
                    .iter()
                    .map(|s| rsyms.iter().position(|x| x == s).or(*default).map(|i| i as u32))
                    .collect(),
            ),
            (Node::Array(wi), Node::Array(ri)) => {
                let items = self.compile(*wi, *ri)?;
                Act::Array { items, min: self.w.min_size(*wi) }
            }
            (Node::Map(wv), Node::Map(rv)) => {
                let values = self.compile(*wv, *rv)?;
                Act::Map { values, min: 1 + self.w.min_size(*wv) }
            }
            (Node::Record { fields: wf, name }, Node::Record { fields: rf, .. }) => {
                let mut fields = Vec::with_capacity(wf.len());
                let mut seen = vec![false; rf.len()];
                for f in wf {
                    let slot = rf.iter().position(|x| x.name == f.name || x.aliases.contains(&f.name));
                    match slot {
                        Some(j) => {
                            seen[j] = true;
                            fields.push((self.compile(f.ty, rf[j].ty)?, Some(j), f.name.clone()));
                        }
                        None => {
                            let skip = self.identity(f.ty)?;
                            fields.push((skip, None, f.name.clone()));
                        }
                    }
                }
                let mut defaults = Vec::with_capacity(rf.len());
                for (j, f) in rf.iter().enumerate() {
                    if seen[j] {
                        defaults.push(None);
                        continue;
                    }
                    let d = f.default.as_ref().ok_or_else(|| {
                        format!("reader field '{}' of {name} is not written and has no default", f.name)
                    })?;
                    let mut out = Vec::new();
                    encode_json(self.r, f.ty, d, &mut out, 0)
                        .map_err(|e| format!("default of field '{}': {e}", f.name))?;
                    defaults.push(Some(out));
                }
                let identity =
                    wf.len() == rf.len() && fields.iter().enumerate().all(|(i, (_, s, _))| *s == Some(i));
                Act::Record(Box::new(RecordAct { fields, defaults, identity }))
            }
            _ => return Err(format!("writer type {} cannot be read as {}", wn.kind(), rn.kind())),
        })
    }

    /// Steps that validate a writer value and copy it unchanged (used to drop writer-only fields).
    fn identity(&mut self, w: NodeId) -> Result<ActId, String> {
        let mut sub = Compiler { w: self.w, r: self.w, acts: std::mem::take(&mut self.acts), memo: HashMap::new() };
        // Keep identity programs in the same arena; memo them separately (different reader schema).
        let res = sub.compile(w, w);
        self.acts = sub.acts;
        res
    }
}

/// Canonical encoding of a JSON default value (the Avro spec's JSON form of defaults).
pub fn encode_json(s: &Schema, id: NodeId, v: &Value, out: &mut Vec<u8>, depth: u32) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("default nests too deeply".into());
    }
    let bad = || format!("{v} is not a valid {} default", s.node(id).kind());
    match s.node(id) {
        Node::Null => v.is_null().then_some(()).ok_or_else(bad)?,
        Node::Boolean => out.push(u8::from(v.as_bool().ok_or_else(bad)?)),
        Node::Int => {
            let n = v.as_i64().filter(|n| i32::try_from(*n).is_ok()).ok_or_else(bad)?;
            put_long(out, n)
        }
        Node::Long(_) => put_long(out, v.as_i64().ok_or_else(bad)?),
        Node::Float => out.extend_from_slice(&(v.as_f64().ok_or_else(bad)? as f32).to_le_bytes()),
        Node::Double => out.extend_from_slice(&v.as_f64().ok_or_else(bad)?.to_le_bytes()),
        Node::String => put_bytes(out, v.as_str().ok_or_else(bad)?.as_bytes()),
        Node::Bytes | Node::Fixed { .. } => {
            // JSON form of bytes: each code point 0-255 is one byte
            let text = v.as_str().ok_or_else(bad)?;
            let raw: Vec<u8> = text.chars().map(|c| u8::try_from(u32::from(c))).collect::<Result<_, _>>().map_err(|_| bad())?;
            match s.node(id) {
                Node::Fixed { size, .. } if *size != raw.len() => return Err(bad()),
                Node::Fixed { .. } => out.extend_from_slice(&raw),
                _ => put_bytes(out, &raw),
            }
        }
        Node::Enum { symbols, .. } => {
            let sym = v.as_str().ok_or_else(bad)?;
            put_long(out, symbols.iter().position(|x| x == sym).ok_or_else(bad)? as i64)
        }
        Node::Array(items) => {
            let arr = v.as_array().ok_or_else(bad)?;
            if !arr.is_empty() {
                put_long(out, arr.len() as i64);
                for x in arr {
                    encode_json(s, *items, x, out, depth + 1)?;
                }
            }
            out.push(0)
        }
        Node::Map(values) => {
            let obj = v.as_object().ok_or_else(bad)?;
            let mut keys: Vec<&String> = obj.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            if !keys.is_empty() {
                put_long(out, keys.len() as i64);
                for k in keys {
                    put_bytes(out, k.as_bytes());
                    encode_json(s, *values, &obj[k], out, depth + 1)?;
                }
            }
            out.push(0)
        }
        Node::Record { fields, .. } => {
            let obj = v.as_object().ok_or_else(bad)?;
            for f in fields {
                let fv = obj.get(&f.name).or(f.default.as_ref()).ok_or_else(bad)?;
                encode_json(s, f.ty, fv, out, depth + 1)?;
            }
        }
        Node::Union(branches) => {
            // the first branch the value fits (the spec's first-branch rule, as fastavro relaxes it)
            for (i, &b) in branches.iter().enumerate() {
                let mut tmp = Vec::new();
                if encode_json(s, b, v, &mut tmp, depth + 1).is_ok() {
                    put_long(out, i as i64);
                    out.extend_from_slice(&tmp);
                    return Ok(());
                }
            }
            return Err(bad());
        }
    }
    Ok(())
}

impl Program {
    /// Compile the steps that read `writer` values as `reader` values.
    pub fn compile(writer: &Schema, reader: &Schema) -> Result<Program, String> {
        let mut c = Compiler { w: writer, r: reader, acts: Vec::new(), memo: HashMap::new() };
        let root = c.compile(writer.root, reader.root)?;
        Ok(Program { acts: c.acts, root })
    }

    /// Validate `body` (exactly one value, nothing after it) and append its canonical form to `out`.
    pub fn canonicalize(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), Located> {
        let mut cur = Cursor::new(body);
        let start = out.len();
        let res = self.run(self.root, &mut cur, out, 0);
        if let Err(e) = res {
            out.truncate(start);
            return Err(e);
        }
        if cur.remaining() != 0 {
            out.truncate(start);
            return Err(Fault::Trailing(cur.remaining()).into());
        }
        Ok(())
    }

    /// How many items a block of `count` may announce given what is left of the body.
    #[inline]
    fn check_count(count: u64, min: usize, remaining: usize, total: u64) -> Result<(), Fault> {
        if min == 0 {
            if total + count > MAX_ZERO_SIZE_ITEMS {
                return Err(Fault::CountTooLarge);
            }
        } else if u128::from(count) * (min as u128) > remaining as u128 {
            return Err(Fault::CountTooLarge);
        }
        Ok(())
    }

    /// Read one block header: (item count, byte size if the writer gave one). Count 0 ends.
    #[inline]
    fn block(cur: &mut Cursor, min: usize, total: u64) -> Result<(u64, Option<usize>), Fault> {
        let count = cur.long()?;
        if count >= 0 {
            Self::check_count(count as u64, min, cur.remaining(), total)?;
            return Ok((count as u64, None));
        }
        let count = count.checked_neg().ok_or(Fault::CountTooLarge)? as u64;
        let size = cur.long()?;
        if size < 0 {
            return Err(Fault::NegativeLength);
        }
        let size = size as u64;
        if size > cur.remaining() as u64 {
            return Err(Fault::Eof);
        }
        Self::check_count(count, min, size as usize, total)?;
        Ok((count, Some(size as usize)))
    }

    fn run(&self, id: ActId, cur: &mut Cursor, out: &mut Vec<u8>, depth: u32) -> Result<(), Located> {
        match &self.acts[id] {
            Act::Null | Act::Placeholder => {}
            Act::Bool => out.push(u8::from(cur.boolean()?)),
            Act::Int => put_long(out, i64::from(cur.int()?)),
            Act::Long => put_long(out, cur.long()?),
            Act::Float => out.extend_from_slice(cur.take(4)?),
            Act::Double => out.extend_from_slice(cur.take(8)?),
            Act::Bytes | Act::StrToBytes => put_bytes(out, cur.bytes()?),
            Act::Str | Act::BytesToStr => put_bytes(out, cur.string()?.as_bytes()),
            Act::IntToLong => put_long(out, i64::from(cur.int()?)),
            Act::IntToFloat => out.extend_from_slice(&(cur.int()? as f32).to_le_bytes()),
            Act::IntToDouble => out.extend_from_slice(&f64::from(cur.int()?).to_le_bytes()),
            Act::LongToFloat => out.extend_from_slice(&(cur.long()? as f32).to_le_bytes()),
            Act::LongToDouble => out.extend_from_slice(&(cur.long()? as f64).to_le_bytes()),
            Act::FloatToDouble => {
                let b = cur.take(4)?;
                let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.extend_from_slice(&f64::from(f).to_le_bytes())
            }
            Act::Fixed(n) => out.extend_from_slice(cur.take(*n)?),
            Act::Enum(map) => {
                let i = cur.long()?;
                let mapped = usize::try_from(i).ok().and_then(|i| map.get(i)).ok_or(Fault::BadEnum(i))?;
                put_long(out, i64::from(mapped.ok_or(Fault::UnknownSymbol)?))
            }
            Act::Array { items, min } => {
                if depth >= MAX_DEPTH {
                    return Err(Fault::TooDeep.into());
                }
                let at = out.len();
                let mut total: u64 = 0;
                loop {
                    let (count, size) = Self::block(cur, *min, total)?;
                    if count == 0 {
                        break;
                    }
                    let start = cur.pos;
                    for _ in 0..count {
                        self.run(*items, cur, out, depth + 1)?;
                    }
                    if size.is_some_and(|s| cur.pos - start != s) {
                        return Err(Fault::BlockSize.into());
                    }
                    total += count;
                }
                if total > 0 {
                    let (v, n) = varint_bytes(total as i64);
                    out.splice(at..at, v[..n].iter().copied());
                }
                out.push(0);
            }
            Act::Map { values, min } => {
                if depth >= MAX_DEPTH {
                    return Err(Fault::TooDeep.into());
                }
                let at = out.len();
                // (entry start, key start, key end, entry end), offsets into out
                let mut entries: Vec<(usize, usize, usize, usize)> = Vec::new();
                loop {
                    let (count, size) = Self::block(cur, *min, entries.len() as u64)?;
                    if count == 0 {
                        break;
                    }
                    let start = cur.pos;
                    for _ in 0..count {
                        let e = out.len();
                        let key = cur.string()?;
                        put_bytes(out, key.as_bytes());
                        let k = out.len() - key.len();
                        let ke = out.len();
                        self.run(*values, cur, out, depth + 1)?;
                        entries.push((e, k, ke, out.len()));
                    }
                    if size.is_some_and(|s| cur.pos - start != s) {
                        return Err(Fault::BlockSize.into());
                    }
                }
                if entries.len() > 1 {
                    let key = |e: &(usize, usize, usize, usize)| (e.1, e.2);
                    let mut sorted = true;
                    for w in entries.windows(2) {
                        let (a, b) = (key(&w[0]), key(&w[1]));
                        match out[a.0..a.1].cmp(&out[b.0..b.1]) {
                            std::cmp::Ordering::Less => {}
                            std::cmp::Ordering::Equal => return Err(Fault::DuplicateKey.into()),
                            std::cmp::Ordering::Greater => sorted = false,
                        }
                    }
                    if !sorted {
                        let region = out[at..].to_vec();
                        entries.sort_by(|a, b| out[a.1..a.2].cmp(&out[b.1..b.2]));
                        for w in entries.windows(2) {
                            if out[w[0].1..w[0].2] == out[w[1].1..w[1].2] {
                                return Err(Fault::DuplicateKey.into());
                            }
                        }
                        out.truncate(at);
                        for (e, _, _, end) in &entries {
                            out.extend_from_slice(&region[e - at..end - at]);
                        }
                    }
                }
                if !entries.is_empty() {
                    let (v, n) = varint_bytes(entries.len() as i64);
                    out.splice(at..at, v[..n].iter().copied());
                }
                out.push(0);
            }
            Act::Record(rec) => {
                if depth >= MAX_DEPTH {
                    return Err(Fault::TooDeep.into());
                }
                if rec.identity {
                    for (act, _, name) in &rec.fields {
                        self.run(*act, cur, out, depth + 1).map_err(|mut e| {
                            e.path.push(name.clone());
                            e
                        })?;
                    }
                } else {
                    let mut slots: Vec<Option<Vec<u8>>> = vec![None; rec.defaults.len()];
                    let mut scratch = Vec::new();
                    for (act, slot, name) in &rec.fields {
                        let target = match slot {
                            Some(j) => slots[*j].insert(Vec::new()),
                            None => {
                                scratch.clear();
                                &mut scratch
                            }
                        };
                        self.run(*act, cur, target, depth + 1).map_err(|mut e| {
                            e.path.push(name.clone());
                            e
                        })?;
                    }
                    for (slot, default) in slots.iter().zip(&rec.defaults) {
                        match (slot, default) {
                            (Some(b), _) | (None, Some(b)) => out.extend_from_slice(b),
                            (None, None) => unreachable!("compile() gives every unwritten field a default"),
                        }
                    }
                }
            }
            Act::UnionToUnion(steps) => {
                if depth >= MAX_DEPTH {
                    return Err(Fault::TooDeep.into());
                }
                let i = cur.long()?;
                let step = usize::try_from(i).ok().and_then(|i| steps.get(i)).ok_or(Fault::BadUnion(i))?;
                let (branch, act) = step.ok_or(Fault::NoReaderBranch)?;
                put_long(out, i64::from(branch));
                self.run(act, cur, out, depth + 1)?;
            }
            Act::UnionToOne(steps) => {
                if depth >= MAX_DEPTH {
                    return Err(Fault::TooDeep.into());
                }
                let i = cur.long()?;
                let step = usize::try_from(i).ok().and_then(|i| steps.get(i)).ok_or(Fault::BadUnion(i))?;
                self.run(step.ok_or(Fault::NoReaderBranch)?, cur, out, depth + 1)?;
            }
            Act::OneToUnion(branch, act) => {
                put_long(out, i64::from(*branch));
                self.run(*act, cur, out, depth + 1)?;
            }
        }
        Ok(())
    }
}
