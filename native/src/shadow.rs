//! A shadow of the policy engine's decision memo, so that an event whose decision the memo
//! already holds is decided, and its audit record encoded, without a Python object per event.
//!
//! Python teaches it (`learn`): an event the Python fact path decided from the memo, with the
//! facts its plan's memo key reads (`key_of.facts`), the decision encoded as the record's field,
//! and a handle Python wants back. `decide` then decodes a batch; an event whose plan and memo key
//! it knows becomes its record body (every field as `FactPath.layout` says, pseudonyms by
//! HMAC-SHA256 as `Pseudonymizer` makes them) and a hit tuple; every other event is returned as
//! `decode_batch` returns it. It never decides anything itself: a hit is a decision the Python
//! memo holds (Python resets the shadow whenever that memo is dropped), and anything it cannot
//! mirror exactly (a non-ASCII edge on a subject id, a country that is not ASCII, a value the
//! record encoder would refuse, a time Python divides differently) is left to Python.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::ffi;
use sha2::{Digest, Sha256};

use crate::extract::{self, Val};
use crate::lazy::{untracked, LazyRecord};
use crate::record::ValItem;
use crate::violation::{self, Messages, Template, Values, Violation};
use crate::wire::Cursor;
use crate::{EventCodec, RecordSealer, Refused};

/// One fact of a plan's memo key (the engine's `_KEY_EXPR`, read from the facts as `FactPath._key_of` does).
#[derive(Debug, Clone, PartialEq)]
enum KeyFact {
    Slot(usize),
    IsSubject,
    Minor(i64),
    Abroad,
    Attr(String),
}

struct PlanEntry {
    /// None: the plan's key reads a fact not mirrored here (its events are Python's)
    facts: Option<Vec<KeyFact>>,
    /// memo key bytes -> entry index
    memo: HashMap<Vec<u8>, usize>,
}

struct Entry {
    decision: Vec<u8>,
    handle: Py<PyAny>,
    owner: usize,
    /// a violating decision: its message and labels (None: not a violation)
    violation: Option<Arc<Violation>>,
}

/// Where the facts `decide` reads are in the facts tuple.
struct At {
    id: usize,
    time: usize,
    kind: usize,
    policy: usize,
    system: usize,
    aid: usize,
    sid: usize,
    age: usize,
    minor: usize,
    region: usize,
    cats: usize,
    purpose: usize,
    rtype: usize,
    rid: usize,
    rcountry: usize,
    attrs: usize,
}

const HEX: &[u8; 16] = b"0123456789abcdef";
/// An upper bound on the entries kept (Python's memo is bounded in bytes; this only guards memory).
const MAX_ENTRIES: usize = 1 << 20;
const MAX_PSEUDONYMS: usize = 1 << 16;
const MAX_PSEUDONYM_ID: usize = 256;
const MAX_CHAINS: usize = 10_000;
/// Source partitions whose chain is found by comparing (a batch has a few)
const RECENT_CHAINS: usize = 16;
/// What the violating entries may hold (their decisions and messages): past it, `learn` refuses
/// violations until the next reset (Python's memo is bounded in bytes, its copies here are too).
const MAX_VIOLATION_BYTES: usize = 64 << 20;
/// Python divides an int by 1_000_000 exactly as f64 / f64 only below 2**53.
const EXACT_F64: i64 = 1 << 53;

#[pyclass(module = "auditor._native")]
pub struct FactMemo {
    names: HashMap<String, usize>,
    at: At,
    n_facts: usize,
    min_micros: i64,
    max_micros: i64,
    max_text: usize,
    max_subject_id: usize,
    /// HMAC-SHA256 states after the key's inner and outer pad blocks
    hmac: Option<(Sha256, Sha256)>,
    pseudonyms: HashMap<Vec<u8>, [u8; 32]>,
    plans: HashMap<Vec<u8>, PlanEntry>,
    entries: Vec<Entry>,
    hits: Vec<u64>,
    /// chain ids by source (topic, partition), as indices into `chain_list`; the last few looked
    /// up in `recent` (compared, not hashed); all dropped between batches past MAX_CHAINS
    chains: HashMap<(String, i64), usize>,
    chain_list: Vec<(Py<PyString>, String)>,
    recent: Vec<(i64, String, usize)>,
    /// violation messages by the Python list of their whole form (shared by the entries taught it)
    messages: HashMap<usize, Arc<Messages>>,
    /// what the violating entries hold, in bytes (bounded by MAX_VIOLATION_BYTES)
    violation_bytes: usize,
}

fn tag_str(out: &mut Vec<u8>, s: &str) {
    out.push(4);
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A value in a memo key: byte-equal keys are equal Python tuples.
fn tag_val(out: &mut Vec<u8>, v: &Val<'_>) {
    match v {
        Val::Null => out.push(0),
        Val::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
        Val::Long(n) => {
            out.push(2);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Val::Double(x) => {
            out.push(3);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Val::Str(s) => tag_str(out, s),
        Val::Bytes(b) => {
            out.push(5);
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        }
        Val::Tuple(xs) => {
            out.push(6);
            out.extend_from_slice(&(xs.len() as u64).to_le_bytes());
            for x in xs {
                tag_val(out, x);
            }
        }
    }
}

fn nonempty<'a>(v: &Val<'a>) -> Option<&'a str> {
    match v {
        Val::Str(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// `_region`: `code.upper() if code else None`, for ASCII codes only (None: not mirrored here).
fn region(v: &Val<'_>) -> Option<Option<String>> {
    match v {
        Val::Null => Some(None),
        Val::Str(s) if s.is_empty() => Some(None),
        Val::Str(s) if s.is_ascii() => Some(Some(s.to_ascii_uppercase())),
        _ => None,
    }
}

impl FactMemo {
    fn slot(names: &HashMap<String, usize>, name: &str) -> PyResult<usize> {
        names.get(name).copied().ok_or_else(|| PyValueError::new_err(format!("the facts do not include '{name}'")))
    }

    /// The plan's key of an event (policy, kind, recipient type or `*`, purpose, categories),
    /// if the event passes the checks `FactPath.lookup` makes before it looks (`_plain`).
    fn plan_key(&self, f: &[Val<'_>], raw_len: usize, out: &mut Vec<u8>) -> Option<()> {
        let a = &self.at;
        if raw_len > self.max_text {
            return None;
        }
        let policy = nonempty(&f[a.policy])?;
        nonempty(&f[a.id])?;
        nonempty(&f[a.system])?;
        let purpose = nonempty(&f[a.purpose])?;
        nonempty(&f[a.aid])?;
        // subject_id_edges_clean, where it answers from printable ASCII edges (else Python judges)
        let Val::Str(sid) = f[a.sid] else { return None };
        let (first, last) = (*sid.as_bytes().first()?, *sid.as_bytes().last()?);
        if !(b'!'..=b'~').contains(&first) || !(b'!'..=b'~').contains(&last) || sid.chars().count() > self.max_subject_id {
            return None;
        }
        let Val::Tuple(cats) = &f[a.cats] else { return None };
        if cats.is_empty() || !cats.iter().all(|c| nonempty(c).is_some()) {
            return None;
        }
        match f[a.age] {
            Val::Null => {}
            Val::Long(n) if (0..200).contains(&n) => {}
            _ => return None,
        }
        let Val::Long(when) = f[a.time] else { return None };
        if !(self.min_micros..=self.max_micros).contains(&when) {
            return None;
        }
        let Val::Str(kind) = f[a.kind] else { return None };
        let rtype = match f[a.rtype] {
            Val::Null => None,
            Val::Str(s) => Some(s),
            _ => return None,
        };
        if rtype.is_none() == (kind == "DISCLOSURE") {
            return None;
        }
        if rtype.is_some() && (rtype == Some("") || nonempty(&f[a.rid]).is_none()) {
            return None;
        }
        out.clear();
        tag_str(out, policy);
        tag_str(out, kind);
        tag_str(out, rtype.unwrap_or("*"));
        tag_str(out, purpose);
        tag_val(out, &f[a.cats]);
        Some(())
    }

    /// The memo key of an event under a plan's facts (None: a value not mirrored here).
    fn memo_key(&self, facts: &[KeyFact], f: &[Val<'_>], out: &mut Vec<u8>) -> Option<()> {
        let a = &self.at;
        out.clear();
        for k in facts {
            match k {
                KeyFact::Slot(i) => tag_val(out, &f[*i]),
                KeyFact::IsSubject => tag_val(out, &Val::Bool(f[a.aid] == f[a.sid])),
                KeyFact::Minor(minor_age) => {
                    let flag = match f[a.minor] {
                        Val::Null => None,
                        Val::Bool(b) => Some(b),
                        _ => return None,
                    };
                    let age = match f[a.age] {
                        Val::Null => None,
                        Val::Long(n) => Some(n),
                        _ => return None,
                    };
                    let v = if flag == Some(true) || age.is_some_and(|n| n < *minor_age) {
                        Val::Bool(true)
                    } else if flag.is_none() && age.is_none() {
                        Val::Null
                    } else {
                        Val::Bool(false)
                    };
                    tag_val(out, &v)
                }
                KeyFact::Abroad => {
                    let theirs = region(&f[a.rcountry])?;
                    let ours = region(&f[a.region])?;
                    let v = match (theirs, ours) {
                        (Some(t), Some(o)) => Val::Bool(t != o),
                        _ => Val::Null,
                    };
                    tag_val(out, &v)
                }
                KeyFact::Attr(name) => {
                    let Val::Tuple(pairs) = &f[a.attrs] else { return None };
                    let mut found = &Val::Null;
                    for p in pairs {
                        // dict(pairs).get(name): the last pair of a key wins
                        if let Val::Tuple(kv) = p {
                            if let [Val::Str(k), v] = kv.as_slice() {
                                if k == name {
                                    found = v;
                                }
                                continue;
                            }
                        }
                        return None;
                    }
                    tag_val(out, found)
                }
            }
        }
        Some(())
    }

    fn pseudonym(&mut self, id: &str) -> Option<[u8; 32]> {
        if let Some(hit) = self.pseudonyms.get(id.as_bytes()) {
            return Some(*hit);
        }
        let (inner, outer) = self.hmac.as_ref()?;
        let mut h = inner.clone();
        h.update(id.as_bytes());
        let mut o = outer.clone();
        o.update(h.finalize());
        let digest = o.finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, b) in digest[..16].iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        if id.len() <= MAX_PSEUDONYM_ID {
            if self.pseudonyms.len() >= MAX_PSEUDONYMS {
                self.pseudonyms.clear();
            }
            self.pseudonyms.insert(id.as_bytes().to_vec(), out);
        }
        Some(out)
    }

    fn decode_vals<'a>(&self, codec: &'a EventCodec, canonical: &'a [u8], slots: &mut Vec<Val<'a>>) -> bool {
        slots.clear();
        slots.resize(self.n_facts, Val::Null);
        let mut cur = Cursor::new(canonical);
        extract::fact_vals(&codec.reader, &codec.plan, &mut cur, slots).is_ok()
    }

    fn check_codec(&self, codec: &EventCodec) -> PyResult<()> {
        if codec.fact_names.len() != self.n_facts || codec.fact_names.iter().enumerate().any(|(i, n)| self.names.get(n) != Some(&i)) {
            return Err(PyValueError::new_err("this codec extracts other facts than the memo was made for"));
        }
        Ok(())
    }
}

fn call<'py>(msg: &Bound<'py, PyAny>, name: &Bound<'py, PyString>) -> Option<Bound<'py, PyAny>> {
    msg.call_method0(name).ok()
}

/// `x or ""` for an exact str or None (a str Rust cannot hold, lone surrogates, or a str subclass,
/// whose `__format__` Python's f-strings of the chain id and source call: not mirrored here).
fn opt_str<'a>(v: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    if v.is_none() {
        return Some("");
    }
    v.cast_exact::<PyString>().ok()?.to_str().ok()
}

/// `x or 0` for an exact int or None (anything else: not mirrored here).
fn opt_int(v: &Bound<'_, PyAny>) -> Option<i64> {
    if v.is_none() {
        return Some(0);
    }
    if !v.is_exact_instance_of::<PyInt>() {
        return None;
    }
    v.extract::<i64>().ok()
}

#[pymethods]
impl FactMemo {
    /// `codec`: the decoder whose facts `decide` reads (its fact names must include those read
    /// here). The bounds are those of `auditor.events.codec` and `auditor.trail.record`.
    #[new]
    fn new(codec: &Bound<'_, EventCodec>, min_micros: i64, max_micros: i64, max_text: usize, max_subject_id: usize) -> PyResult<Self> {
        let codec = codec.get();
        let names: HashMap<String, usize> = codec.fact_names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let s = |n: &str| FactMemo::slot(&names, n);
        let at = At {
            id: s("event_id")?,
            time: s("occurred_at")?,
            kind: s("kind")?,
            policy: s("policy_id")?,
            system: s("source_system")?,
            aid: s("actor.id")?,
            sid: s("subject.id")?,
            age: s("subject.age")?,
            minor: s("subject.is_minor")?,
            region: s("subject.region")?,
            cats: s("data_categories")?,
            purpose: s("purpose")?,
            rtype: s("recipient.type")?,
            rid: s("recipient.id")?,
            rcountry: s("recipient.country")?,
            attrs: s("attributes")?,
        };
        Ok(FactMemo {
            n_facts: names.len(),
            names,
            at,
            min_micros,
            max_micros,
            max_text,
            max_subject_id,
            hmac: None,
            pseudonyms: HashMap::new(),
            plans: HashMap::new(),
            entries: Vec::new(),
            hits: Vec::new(),
            chains: HashMap::new(),
            chain_list: Vec::new(),
            recent: Vec::new(),
            messages: HashMap::new(),
            violation_bytes: 0,
        })
    }

    /// The pseudonymisation key (as `Pseudonymizer` holds it), or None: no event is decided here.
    fn set_key(&mut self, key: Option<&[u8]>) {
        self.pseudonyms.clear();
        self.hmac = key.map(|key| {
            let mut k = [0u8; 64];
            if key.len() > 64 {
                k[..32].copy_from_slice(&Sha256::digest(key));
            } else {
                k[..key.len()].copy_from_slice(key);
            }
            let mut inner = Sha256::new();
            inner.update(k.map(|b| b ^ 0x36));
            let mut outer = Sha256::new();
            outer.update(k.map(|b| b ^ 0x5c));
            (inner, outer)
        });
    }

    /// Forget every plan and decision (the Python memo was dropped, or what records hold changed).
    fn reset(&mut self) {
        self.plans.clear();
        self.entries.clear();
        self.messages.clear();
        self.violation_bytes = 0;
    }

    fn __len__(&self) -> usize {
        self.entries.len()
    }

    /// Hits since the last call, per owner (the `owner` numbers given to `learn`).
    fn take_hits(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.hits)
    }

    /// Remember that the memo decides the event `value` as `decision` (the record's decision
    /// field, encoded): its plan's memo key reads `facts` (`key_of.facts`; `minor_age` the
    /// pack's). `handle` is what `decide` gives back for the events it decides so, `owner` whose
    /// hits they count as. A violating decision also gives `violation`: its message cut at the
    /// per-event values (`[text, slot name, text, ..., text]`), whole and truncated, and its
    /// events' violation labels (what `HitBatch.seal` places after each one's record). False when
    /// the event, a fact of the key or the message is not mirrored here.
    #[pyo3(signature = (codec, value, facts, minor_age, owner, handle, decision, violation=None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn learn(
        &mut self,
        codec: &Bound<'_, EventCodec>,
        value: &[u8],
        facts: Vec<String>,
        minor_age: i64,
        owner: usize,
        handle: Py<PyAny>,
        decision: Vec<u8>,
        violation: Option<(Bound<'_, PyList>, Bound<'_, PyList>, Py<PyTuple>)>,
    ) -> PyResult<bool> {
        let violation = match violation {
            None => None,
            Some((full, cut, labels)) => {
                let at = full.as_ptr() as usize;
                let known = self.messages.get(&at).filter(|m| m.lists.1.is(&cut)).cloned();
                let messages = match known {
                    Some(m) => m,
                    None => {
                        let (Ok(f), Ok(c)) = (full.extract::<Vec<String>>(), cut.extract::<Vec<String>>()) else {
                            return Ok(false);
                        };
                        let (Some(f), Some(c)) = (Template::new(&f), Template::new(&c)) else { return Ok(false) };
                        let m = Arc::new(Messages { full: f, cut: c, lists: (full.clone().into_any().unbind(), cut.into_any().unbind()) });
                        self.violation_bytes += m.size();
                        m
                    }
                };
                self.violation_bytes += decision.len() + 64;
                if self.violation_bytes > MAX_VIOLATION_BYTES {
                    return Ok(false);
                }
                self.messages.insert(at, messages.clone());
                Some(Arc::new(Violation { messages, labels }))
            }
        };
        let codec = codec.get();
        self.check_codec(codec)?;
        // None: the plan reads a fact not mirrored here (remembered, so that `decide` does not
        // ask Python to teach its events again and again)
        let mut spec = Some(Vec::with_capacity(facts.len()));
        for f in &facts {
            let k = match f.as_str() {
                "actor.is_subject" => KeyFact::IsSubject,
                "subject.minor" => KeyFact::Minor(minor_age),
                "recipient.abroad" => KeyFact::Abroad,
                _ => match f.strip_prefix("attributes.") {
                    Some(name) => KeyFact::Attr(name.to_string()),
                    None => match self.names.get(f) {
                        Some(i) => KeyFact::Slot(*i),
                        None => {
                            spec = None;
                            break;
                        }
                    },
                },
            };
            if let Some(v) = spec.as_mut() {
                v.push(k);
            }
        }
        let mut arena = Vec::with_capacity(value.len() + 64);
        let Ok(_) = codec.decode_one(Some(value), &mut arena) else { return Ok(false) };
        let mut slots = Vec::new();
        if !self.decode_vals(codec, &arena, &mut slots) {
            return Ok(false);
        }
        let (mut pkey, mut mkey) = (Vec::new(), Vec::new());
        if self.plan_key(&slots, value.len(), &mut pkey).is_none() {
            return Ok(false);
        }
        if let Some(spec) = &spec {
            if self.memo_key(spec, &slots, &mut mkey).is_none() {
                return Ok(false);
            }
        }
        if self.entries.len() >= MAX_ENTRIES || self.plans.len() >= MAX_ENTRIES {
            self.reset();
        }
        let plan = self.plans.entry(pkey).or_insert_with(|| PlanEntry { facts: spec.clone(), memo: HashMap::new() });
        if plan.facts != spec {
            // the Python plan of this key reads other facts now: it is the one that counts
            plan.facts = spec;
            plan.memo.clear();
        }
        if plan.facts.is_none() {
            return Ok(false);
        }
        if let Some(&known) = plan.memo.get(&mkey) {
            // taught again (an event of a known key that `decide` left to Python: a time past
            // 2**53 us, an odd message, a record it could not encode): one entry per key, else
            // every such event would keep one more until MAX_ENTRIES
            self.entries[known] = Entry { decision, handle, owner, violation };
            return Ok(true);
        }
        self.entries.push(Entry { decision, handle, owner, violation });
        plan.memo.insert(mkey, self.entries.len() - 1);
        Ok(true)
    }

    /// Decode a batch (as `EventCodec.decode_batch`) and decide what the memo holds, keeping the
    /// hits in compiled code: returns `(misses, results, teach, hits)`. A hit's record body is
    /// the one `RecordSealer.seal_batch` builds under `layout` from the Python item (`batch`: the
    /// layout's batch values); `messages` give topic, partition and offset.
    /// `misses`: the positions of the events not decided here, in order; `results`: what
    /// `decode_batch` gives each of them (`Decoded` / `Refused`); `teach`: per miss, 1 where
    /// teaching the event (`learn`) could make the shadow decide its key, 0 where it knows the
    /// key already or cannot mirror the event or its plan; `hits`: the others, to be sealed
    /// (`HitBatch.seal`) with the records of the misses.
    #[pyo3(signature = (codec, sealer, layout, values, messages, batch))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn decide_batch<'py>(
        &mut self,
        py: Python<'py>,
        codec: &Bound<'py, EventCodec>,
        sealer: &Bound<'py, RecordSealer>,
        layout: usize,
        values: &Bound<'py, PyList>,
        messages: &Bound<'py, PyList>,
        batch: &Bound<'py, PyTuple>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyBytes>, Bound<'py, HitBatch>)> {
        let codec = codec.get();
        self.check_codec(codec)?;
        let sealer = sealer.get();
        let layout = sealer.layouts.read().expect("layouts lock").get(layout).cloned()
            .ok_or_else(|| PyValueError::new_err(format!("no layout {layout}")))?;
        let batch_values = sealer.enc.batch_values(&layout, batch)?;
        if values.len() != messages.len() {
            return Err(PyValueError::new_err("one message per value"));
        }
        let raws: Vec<Bound<'py, PyAny>> = values.iter().collect();
        // the messages as they are now: a message's methods (Python code, called below) may change the list
        let msgs: Vec<Bound<'py, PyAny>> = messages.iter().collect();
        let mut bytes: Vec<Option<&[u8]>> = Vec::with_capacity(raws.len());
        for raw in &raws {
            bytes.push(if raw.is_none() {
                None
            } else {
                Some(raw.cast::<PyBytes>().map_err(|_| PyTypeError::new_err("a message value is bytes or None"))?.as_bytes())
            });
        }
        let total: usize = bytes.iter().map(|v| v.map_or(0, <[u8]>::len)).sum();
        // the strict decoding and digests of the whole batch without the GIL (as decode_batch)
        let (arena, decoded) = py.detach(|| {
            let mut arena = Vec::with_capacity(total + total / 4);
            let decoded: Vec<_> = bytes.iter().map(|v| codec.decode_one(*v, &mut arena)).collect();
            (arena, decoded)
        });
        let (misses, results) = (PyList::empty(py), PyList::empty(py));
        let mut teach: Vec<u8> = Vec::new();
        let mut out = HitBatch { n: raws.len(), hits: Vec::new(), bodies: Vec::with_capacity(total * 2), chains: Vec::new() };
        if self.chain_list.len() >= MAX_CHAINS {
            // between batches only: a hit of this batch keeps its chain's index until it is placed
            self.chains.clear();
            self.chain_list.clear();
            self.recent.clear();
        }
        // per chain of `chain_list`: its place in `out.chains` (usize::MAX: none yet)
        let mut chain_at: Vec<usize> = Vec::new();
        let mut slots: Vec<Val<'_>> = Vec::with_capacity(self.n_facts);
        let mut pyslots: Vec<Option<Py<PyAny>>> = (0..self.n_facts).map(|_| None).collect();
        let (mut pkey, mut mkey) = (Vec::new(), Vec::new());
        for (index, ((value, msg), result)) in bytes.iter().zip(msgs.iter()).zip(decoded).enumerate() {
            let (start, end, digest) = match result {
                Ok(r) => r,
                Err(e) => {
                    misses.append(index)?;
                    results.append(Py::new(py, Refused { reason: e.reason, message: e.message, schema_id: e.schema_id })?)?;
                    teach.push(0);
                    continue;
                }
            };
            let canonical = &arena[start..end];
            let body_start = out.bodies.len();
            let hit = self.hit(py, codec, &sealer.enc, &layout, &batch_values, canonical, &digest, value.map_or(0, <[u8]>::len),
                               msg, &mut slots, &mut pkey, &mut mkey, &mut out.bodies)?;
            match hit {
                Ok((chain, partition, when, entry, values)) => {
                    if chain_at.len() <= chain {
                        chain_at.resize(self.chain_list.len(), usize::MAX);
                    }
                    if chain_at[chain] == usize::MAX {
                        let (made, text) = &self.chain_list[chain];
                        out.chains.push(ChainRef { text: text.clone(), py: made.clone_ref(py), partition });
                        chain_at[chain] = out.chains.len() - 1;
                    }
                    let at = chain_at[chain];
                    let e = &self.entries[entry];
                    let viol = match (&e.violation, values) {
                        (Some(v), Some(values)) => Some((v.clone(), values)),
                        _ => None,
                    };
                    out.hits.push(HitRec { index, start: body_start, end: out.bodies.len(), chain: at, when,
                                           handle: e.handle.clone_ref(py), viol });
                    let owner = e.owner;
                    if self.hits.len() <= owner {
                        self.hits.resize(owner + 1, 0);
                    }
                    self.hits[owner] += 1;
                }
                Err(t) => {
                    out.bodies.truncate(body_start);
                    misses.append(index)?;
                    results.append(codec.decoded(py, canonical, &digest, &mut pyslots)?)?;
                    teach.push(u8::from(t));
                }
            }
        }
        Ok((misses, results, PyBytes::new(py, &teach), Bound::new(py, out)?))
    }
}

impl FactMemo {
    /// The record body of a decided event in `body`, and (chain index, partition, seconds, entry, the
    /// values of its violation message when the decision is a violation); Err: Python's.
    #[allow(clippy::too_many_arguments)]
    fn hit<'a>(
        &mut self,
        py: Python<'_>,
        codec: &'a EventCodec,
        enc: &crate::record::RecordEncoder,
        layout: &crate::record::Layout,
        batch_values: &[Vec<u8>],
        canonical: &'a [u8],
        digest: &[u8; 32],
        raw_len: usize,
        msg: &Bound<'_, PyAny>,
        slots: &mut Vec<Val<'a>>,
        pkey: &mut Vec<u8>,
        mkey: &mut Vec<u8>,
        body: &mut Vec<u8>,
    ) -> PyResult<Result<Decided, bool>> {
        // Err(teach): not decided here; teach: whether learning this event could make the shadow
        // decide its key (false: the shadow knows the key, or cannot mirror the event or its plan)
        if self.hmac.is_none() || self.plans.is_empty() {
            return Ok(Err(true));
        }
        if !self.decode_vals(codec, canonical, slots) || self.plan_key(slots, raw_len, pkey).is_none() {
            return Ok(Err(false));
        }
        let Some(plan) = self.plans.get(pkey.as_slice()) else { return Ok(Err(true)) };
        let Some(facts) = &plan.facts else { return Ok(Err(false)) };
        if self.memo_key(facts, slots, mkey).is_none() {
            return Ok(Err(false));
        }
        let Some(&entry) = plan.memo.get(mkey.as_slice()) else { return Ok(Err(true)) };
        let Val::Long(when) = slots[self.at.time] else { return Ok(Err(false)) };
        if !(-EXACT_F64..=EXACT_F64).contains(&when) {
            return Ok(Err(false));
        }
        let (Val::Str(aid), Val::Str(sid)) = (slots[self.at.aid].clone(), slots[self.at.sid].clone()) else {
            return Ok(Err(false));
        };
        let (Some(actor), Some(subject)) = (self.pseudonym(aid), self.pseudonym(sid)) else { return Ok(Err(false)) };
        // a message whose methods fail or answer oddly: Python asks it again, and judges
        let Some(topic_obj) = call(msg, intern!(py, "topic")) else { return Ok(Err(false)) };
        let Some(topic) = opt_str(&topic_obj) else { return Ok(Err(false)) };
        let Some(partition) = call(msg, intern!(py, "partition")).as_ref().and_then(opt_int) else { return Ok(Err(false)) };
        let Some(offset) = call(msg, intern!(py, "offset")).as_ref().and_then(opt_int) else { return Ok(Err(false)) };
        let chain = self.chain_of(py, topic, partition)?;
        let chain_text = self.chain_list[chain].1.as_str();
        let item = ValItem {
            facts: slots,
            items: [
                Val::Null,
                Val::Str(chain_text),
                Val::Str(topic),
                Val::Long(partition),
                Val::Long(offset),
                Val::Bytes(digest),
                Val::Str(std::str::from_utf8(&actor).expect("hex")),
                Val::Str(std::str::from_utf8(&subject).expect("hex")),
            ],
            decision: &self.entries[entry].decision,
        };
        let start = body.len();
        if enc.encode_val_item(layout, batch_values, &item, body).is_err() {
            body.truncate(start);
            return Ok(Err(false));
        }
        let values = match self.entries[entry].violation {
            None => None,
            Some(_) => match self.violation_values(slots, topic, partition, offset, chain_text, &subject, when) {
                Some(v) => Some(v),
                None => {
                    body.truncate(start);
                    return Ok(Err(false));
                }
            },
        };
        Ok(Ok((chain, partition, when as f64 / 1_000_000.0, entry, values)))
    }

    /// The chain of a source partition, as an index into `chain_list`.
    fn chain_of(&mut self, py: Python<'_>, topic: &str, partition: i64) -> PyResult<usize> {
        if let Some((_, _, at)) = self.recent.iter().find(|(p, t, _)| *p == partition && t == topic) {
            return Ok(*at);
        }
        let key = (topic.to_string(), partition);
        let at = match self.chains.get(&key) {
            Some(&at) => at,
            None => {
                // made by chainid.chain_id, the one place that decides chain ids (tests/unit/trail)
                let made = py.import(intern!(py, "auditor.trail.chainid"))?.getattr(intern!(py, "chain_id"))?;
                let c = made.call1((topic, partition))?.cast_into::<PyString>()?;
                let text = c.to_str()?.to_string();
                self.chain_list.push((c.unbind(), text));
                self.chains.insert(key.clone(), self.chain_list.len() - 1);
                self.chain_list.len() - 1
            }
        };
        if self.recent.len() >= RECENT_CHAINS {
            self.recent.clear();
        }
        self.recent.push((partition, key.0, at));
        Ok(at)
    }

    /// The values of a violation message but seq, record hash and key id (`_fact_violation`'s
    /// slots), as JSON text. None: a value written otherwise there (not mirrored here).
    #[allow(clippy::too_many_arguments)]
    fn violation_values(&self, f: &[Val<'_>], topic: &str, partition: i64, offset: i64, chain: &str,
                        subject: &[u8; 32], when: i64) -> Option<Box<Values>> {
        let a = &self.at;
        let text = |v: &Val<'_>| -> Option<Option<String>> {
            match v {
                Val::Null => Some(None),
                Val::Str(s) => Some(Some((*s).to_string())),
                _ => None,
            }
        };
        let Val::Str(eid) = f[a.id] else { return None };
        let mut v = Box::new(Values::new(eid));
        v.set(0, Some(eid));
        v.set(1, Some(&format!("{topic}/{partition}@{offset}")));
        v.set(2, Some(chain));
        v.set(5, text(&f[a.kind])?.as_deref());
        v.set(6, text(&f[a.purpose])?.as_deref());
        v.set(7, text(&f[a.rtype])?.as_deref());
        v.set(8, Some(std::str::from_utf8(subject).ok()?));
        v.set(10, Some(&violation::isoformat(when)?));
        Some(v)
    }
}

/// What `FactMemo::hit` gives an event it decides: its chain (in `chain_list`) and partition, occurred_at in
/// seconds, its entry, and the values of its violation message when the decision is a violation.
type Decided = (usize, i64, f64, usize, Option<Box<Values>>);

// ---------------------------------------------------------------- a batch's hits, sealed in compiled code

/// One event `decide_batch` decided: where it is in the batch, its record body, its chain.
struct HitRec {
    index: usize,
    start: usize,
    end: usize,
    chain: usize,
    when: f64,
    handle: Py<PyAny>,
    /// a violation: what its message is made of, and its values
    viol: Option<(Arc<Violation>, Box<Values>)>,
}

/// A chain a batch's hits are in: its id, and the source partition it is of.
struct ChainRef {
    text: String,
    py: Py<PyString>,
    partition: i64,
}

/// The hits of one batch (`FactMemo.decide_batch`): their record bodies, kept here until
/// `seal` seals them with the batch's other records, in input order.
#[pyclass(module = "auditor._native")]
pub struct HitBatch {
    n: usize,
    hits: Vec<HitRec>,
    bodies: Vec<u8>,
    chains: Vec<ChainRef>,
}

/// An instance of `ty`, a tuple subclass with no fields of its own (a NamedTuple), holding
/// `items`: what `tuple.__new__(ty, items)` makes, without the temporary tuple.
fn tuple_of<'py>(py: Python<'py>, ty: &Bound<'py, PyType>, items: [Bound<'py, PyAny>; 5]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `ty` was checked by `check_tuple_type` (a tuple subtype laid out as a tuple); this
    // is what CPython's tuple_subtype_new does: tp_alloc, then each item set once.
    unsafe {
        let tp = ty.as_type_ptr();
        let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        let obj = alloc(tp, items.len() as ffi::Py_ssize_t);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        for (i, it) in items.into_iter().enumerate() {
            ffi::PyTuple_SET_ITEM(obj, i as ffi::Py_ssize_t, it.into_ptr());
        }
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

fn check_tuple_type(ty: &Bound<'_, PyType>) -> PyResult<()> {
    // SAFETY: reading two fields of a live type object
    let same_layout = unsafe {
        let tp = ty.as_type_ptr();
        let tuple = std::ptr::addr_of_mut!(ffi::PyTuple_Type);
        (*tp).tp_basicsize == (*tuple).tp_basicsize && (*tp).tp_itemsize == (*tuple).tp_itemsize
    };
    if !ty.is_subclass_of::<PyTuple>()? || !same_layout {
        return Err(PyTypeError::new_err("the outgoing type is a tuple subclass without fields of its own"));
    }
    // the same sizes are not the same layout: a struct sequence (os.stat_result) frees more items
    // than the five written. CPython's own check refuses `tuple.__new__` of such a type.
    let py = ty.py();
    py.get_type::<PyTuple>().call_method1(intern!(py, "__new__"), (ty, PyTuple::empty(py)))
        .map_err(|_| PyTypeError::new_err("the outgoing type is a tuple subclass that tuple.__new__ may make"))?;
    Ok(())
}

/// A chain `HitBatch.seal` seals into: its id, and its head as the batch goes (the hash as
/// Python bytes too, when the head came from Python).
struct Chain {
    text: String,
    seq: i64,
    hash: [u8; 32],
    hash_py: Option<Py<PyBytes>>,
}

/// One record `HitBatch.seal` seals: its chain, its body (in the hits' bodies, or the misses'),
/// and once sealed its place, previous hash, hash and bytes (in the batch's data).
#[derive(Default)]
struct Job {
    chain: usize,
    hit: bool,
    start: usize,
    end: usize,
    seq: i64,
    prev: [u8; 32],
    digest: [u8; 32],
    data: (usize, usize),
}

/// What `HitBatch.seal` does at each position, in input order: a hit (its index, its job), a
/// miss (its job), or a miss that could not be encoded (its exception: not placed).
enum Step {
    Hit(usize, usize),
    Miss(usize),
    Failed(PyErr),
}

/// A chain's head as the batch goes: next seq, head hash (and as Python bytes once made).
struct Work {
    seq: i64,
    hash: [u8; 32],
    hash_py: Option<Py<PyBytes>>,
}

fn head_of(chain: &str, working: &Bound<'_, PyDict>, heads: &Bound<'_, PyDict>) -> PyResult<Work> {
    // `working.get(c) or heads.get(c) or ChainHead.genesis(c)` (a ChainHead is never false)
    let head = match working.get_item(chain)? {
        Some(h) if !h.is_none() => Some(h),
        _ => heads.get_item(chain)?.filter(|h| !h.is_none()),
    };
    let Some(head) = head else { return Ok(Work { seq: 0, hash: crate::record::genesis(chain), hash_py: None }) };
    let py = head.py();
    let size: i64 = head.getattr(intern!(py, "size"))?.extract()?;
    let hash_py = head.getattr(intern!(py, "head_hash"))?.cast_into::<PyBytes>()
        .map_err(|_| PyTypeError::new_err("a chain head's hash is bytes"))?;
    let hash: [u8; 32] = hash_py.as_bytes().try_into().map_err(|_| PyValueError::new_err("a head hash is 32 bytes"))?;
    if size < 0 {
        return Err(PyValueError::new_err("a chain size is not negative"));
    }
    Ok(Work { seq: size, hash, hash_py: Some(hash_py.unbind()) })
}

#[pymethods]
impl HitBatch {
    fn __len__(&self) -> usize {
        self.hits.len()
    }

    /// The positions of the hits in the batch.
    fn positions(&self) -> Vec<usize> {
        self.hits.iter().map(|h| h.index).collect()
    }

    /// Seal the batch in input order: the hits from their bodies, and at the positions `misses`
    /// (ascending; a hit's position among them replaces that hit) the records `records`, as
    /// `RecordSealer.seal_batch` seals them (a record object, or under `layout` an item tuple),
    /// each after its chain's head (`working`, else `heads`, else the chain's genesis).
    ///
    /// Returns `(seals, over, outgoing, sealed, labels, when, cuts, new_heads)`: per miss its
    /// `(data, seq, prev_hash, record_hash)` or the exception that kept it from being sealed (it
    /// is then not placed: the next record of its chain takes its seq); the positions of the hits
    /// whose record with its key is over `audit_budget` bytes; per hit in order its audit message
    /// (an `outgoing`: topic, partition, key, value, no headers), its `(LazyRecord, seq, prev_hash,
    /// record_hash)` (`lazy(chain_id, data)`), its handle and occurred_at seconds; per miss the
    /// number of hits before it; and per chain touched its new `(size, head_hash)`. Then
    /// `(out_cuts, violations, violation_cuts)`: a violating hit's violation message follows its
    /// audit message in `outgoing` (`violations_topic`, no partition, the event id's bytes, the
    /// message: truncated when over `violations_budget` with its key; `key_id`: the pseudonym key
    /// id as JSON text) and its labels go into `violations`; per miss, the lengths of `outgoing`
    /// and `violations` before it.
    #[pyo3(signature = (sealer, layout, batch, misses, records, working, heads, audit_budget, audit_topic,
                        audit_partition, outgoing, lazy, violations_topic=None, violations_budget=0, key_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn seal<'py>(
        &self,
        py: Python<'py>,
        sealer: &Bound<'py, RecordSealer>,
        layout: Option<usize>,
        batch: &Bound<'py, PyTuple>,
        misses: Vec<usize>,
        records: &Bound<'py, PyList>,
        working: &Bound<'py, PyDict>,
        heads: &Bound<'py, PyDict>,
        audit_budget: usize,
        audit_topic: &Bound<'py, PyString>,
        audit_partition: &Bound<'py, PyAny>,
        outgoing: &Bound<'py, PyType>,
        lazy: &Bound<'py, PyAny>,
        violations_topic: Option<Bound<'py, PyString>>,
        violations_budget: usize,
        key_id: Option<String>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        check_tuple_type(outgoing)?;
        if self.hits.iter().any(|h| h.viol.is_some()) && (violations_topic.is_none() || key_id.is_none()) {
            return Err(PyValueError::new_err("a batch with violations needs the violations topic and the key id"));
        }
        if misses.len() != records.len() {
            return Err(PyValueError::new_err("one record per miss"));
        }
        if misses.windows(2).any(|w| w[0] >= w[1]) || misses.last().is_some_and(|&m| m >= self.n) {
            return Err(PyValueError::new_err("the misses are positions of the batch, ascending"));
        }
        let sealer = sealer.get();
        let layout = match layout {
            Some(i) => Some(sealer.layouts.read().expect("layouts lock").get(i).cloned()
                .ok_or_else(|| PyValueError::new_err(format!("no layout {i}")))?),
            None => None,
        };
        let batch_values = match &layout {
            Some(l) => sealer.enc.batch_values(l, batch)?,
            None => Vec::new(),
        };
        // 1. (with the GIL) in input order: each record's chain (its head read once) and body; the
        //    misses' bodies encoded from their Python objects
        let mut chains: Vec<Chain> = Vec::new();
        let mut chain_at: HashMap<String, usize> = HashMap::new();
        let mut of_hit_chain: Vec<Option<usize>> = self.chains.iter().map(|_| None).collect();
        let mut jobs: Vec<Job> = Vec::with_capacity(self.n);
        let mut steps: Vec<Step> = Vec::with_capacity(self.n);
        let mut miss_bodies: Vec<u8> = Vec::new();
        let mut chain_of = |text: &str, chains: &mut Vec<Chain>| -> PyResult<usize> {
            if let Some(&at) = chain_at.get(text) {
                return Ok(at);
            }
            let w = head_of(text, working, heads)?;
            chains.push(Chain { text: text.to_string(), seq: w.seq, hash: w.hash, hash_py: w.hash_py });
            chain_at.insert(text.to_string(), chains.len() - 1);
            Ok(chains.len() - 1)
        };
        let (mut h, mut m) = (0usize, 0usize);
        loop {
            let next_hit = self.hits.get(h).map(|x| x.index);
            let next_miss = misses.get(m).copied();
            match (next_hit, next_miss) {
                (None, None) => break,
                (Some(i), Some(j)) if i == j => h += 1, // a hit replaced by the record given for it
                (Some(i), j) if j.is_none_or(|j| i < j) => {
                    let hit = &self.hits[h];
                    let chain = match of_hit_chain[hit.chain] {
                        Some(c) => c,
                        None => {
                            let c = chain_of(&self.chains[hit.chain].text, &mut chains)?;
                            of_hit_chain[hit.chain] = Some(c);
                            c
                        }
                    };
                    jobs.push(Job { chain, hit: true, start: hit.start, end: hit.end, ..Job::default() });
                    steps.push(Step::Hit(h, jobs.len() - 1));
                    h += 1;
                }
                (_, Some(_)) => {
                    let r = records.get_item(m)?;
                    m += 1;
                    let item = match &layout {
                        Some(l) if r.is_exact_instance_of::<PyTuple>() => Some((l, r.cast::<PyTuple>()?.clone())),
                        _ => None,
                    };
                    // as RecordSealer.seal_batch, one record at a time: one that fails is not placed
                    let text = match &item {
                        Some((_, t)) => t.get_item(1).and_then(|c| Ok(c.cast_into::<PyString>()
                            .map_err(|_| PyTypeError::new_err("an item's second element is its chain id"))?.to_str()?.to_string())),
                        None => sealer.enc.chain_id(&r),
                    };
                    let text = match text {
                        Ok(c) => c,
                        Err(e) => {
                            steps.push(Step::Failed(e));
                            continue;
                        }
                    };
                    let start = miss_bodies.len();
                    let encoded = match &item {
                        Some((l, t)) => sealer.enc.encode_item(l, &batch_values, t, &mut miss_bodies),
                        None => sealer.enc.encode_body(&r, &mut miss_bodies),
                    };
                    if let Err(e) = encoded {
                        miss_bodies.truncate(start);
                        steps.push(Step::Failed(e));
                        continue;
                    }
                    let chain = chain_of(&text, &mut chains)?;
                    jobs.push(Job { chain, hit: false, start, end: miss_bodies.len(), ..Job::default() });
                    steps.push(Step::Miss(jobs.len() - 1));
                }
                (Some(_), None) => unreachable!("matched above"),
            }
        }
        // per chain: the hash of its last record as Python bytes (the next record's prev_hash)
        let mut last_py: Vec<Option<Py<PyBytes>>> = chains.iter_mut().map(|c| c.hash_py.take()).collect();
        // 2. (without the GIL) every record sealed in its chain, in order: framing and SHA-256
        let bodies = self.bodies.as_slice();
        let mut heads_now: Vec<(&str, i64, [u8; 32])> = chains.iter().map(|c| (c.text.as_str(), c.seq, c.hash)).collect();
        let data = py.detach(|| {
            let total: usize = jobs.iter().map(|j| j.end - j.start + 128).sum::<usize>()
                + jobs.iter().map(|j| heads_now[j.chain].0.len()).sum::<usize>();
            let mut data: Vec<u8> = Vec::with_capacity(total);
            for job in jobs.iter_mut() {
                let (text, seq, hash) = &mut heads_now[job.chain];
                let body = if job.hit { &bodies[job.start..job.end] } else { &miss_bodies[job.start..job.end] };
                job.seq = *seq;
                job.prev = *hash;
                let at = data.len();
                job.digest = crate::record::seal(text, *seq, hash, body, &mut data);
                job.data = (at, data.len());
                *seq += 1;
                *hash = job.digest;
            }
            data
        });
        // 3. (with the GIL) the Python objects, in input order
        let (seals, over) = (PyList::empty(py), PyList::empty(py));
        let (outs, sealed, labels, whens, cuts) =
            (PyList::empty(py), PyList::empty(py), PyList::empty(py), PyList::empty(py), PyList::empty(py));
        let (ocuts, viols, vcuts) = (PyList::empty(py), PyList::empty(py), PyList::empty(py));
        let mut message: Vec<u8> = Vec::new();
        let empty = PyTuple::empty(py);
        let native_lazy = lazy.is(py.get_type::<LazyRecord>());
        // per chain of the hits: its key (the chain id's bytes) and audit partition
        let mut hit_chains: Vec<Option<(Bound<'py, PyBytes>, Bound<'py, PyAny>)>> = self.chains.iter().map(|_| None).collect();
        let mut placed = 0usize;
        for step in steps {
            match step {
                Step::Hit(h, j) => {
                    let (hit, job) = (&self.hits[h], &jobs[j]);
                    let chain = &self.chains[hit.chain];
                    let record_data = &data[job.data.0..job.data.1];
                    if record_data.len() + chain.text.len() > audit_budget {
                        over.append((hit.index, record_data.len()))?;
                    }
                    let prev_py = match last_py[job.chain].take() {
                        Some(p) => p,
                        None => PyBytes::new(py, &job.prev).unbind(),
                    };
                    let digest_py = PyBytes::new(py, &job.digest);
                    let data_py = PyBytes::new(py, record_data);
                    let (key, part) = match &hit_chains[hit.chain] {
                        Some(kp) => kp.clone(),
                        None => {
                            let kp = (PyBytes::new(py, chain.text.as_bytes()), audit_partition.call1((chain.partition,))?);
                            hit_chains[hit.chain] = Some(kp.clone());
                            kp
                        }
                    };
                    let record = if native_lazy {
                        LazyRecord::untracked(py, chain.py.clone_ref(py), data_py.clone().unbind())?.into_any()
                    } else {
                        lazy.call1((chain.py.bind(py), &data_py))?
                    };
                    outs.append(untracked(tuple_of(py, outgoing, [audit_topic.clone().into_any(), part, key.into_any(),
                                                                  data_py.into_any(), empty.clone().into_any()])?))?;
                    sealed.append(untracked((record, job.seq, prev_py, &digest_py).into_pyobject(py)?))?;
                    labels.append(hit.handle.bind(py))?;
                    whens.append(PyFloat::new(py, hit.when))?;
                    if let Some((v, values)) = &hit.viol {
                        let (Some(topic), Some(key_id)) = (&violations_topic, &key_id) else { unreachable!("checked above") };
                        let seq = job.seq.to_string();
                        let mut hash = Vec::with_capacity(66);
                        hash.push(b'"');
                        hash.extend(job.digest.iter().flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]));
                        hash.push(b'"');
                        let get = |slot: usize| -> &[u8] {
                            match slot {
                                violation::SEQ => seq.as_bytes(),
                                violation::RECORD_HASH => &hash,
                                violation::KEY_ID => key_id.as_bytes(),
                                _ => values.get(slot),
                            }
                        };
                        message.clear();
                        v.messages.full.render(get, &mut message);
                        if message.len() + values.key.len() > violations_budget {
                            message.clear();
                            v.messages.cut.render(get, &mut message);
                        }
                        outs.append(untracked(tuple_of(py, outgoing, [topic.clone().into_any(), py.None().into_bound(py),
                                                                       PyBytes::new(py, &values.key).into_any(),
                                                                       PyBytes::new(py, &message).into_any(),
                                                                       empty.clone().into_any()])?))?;
                        for label in v.labels.bind(py).iter() {
                            viols.append(label)?;
                        }
                    }
                    last_py[job.chain] = Some(digest_py.unbind());
                    placed += 1;
                }
                Step::Miss(j) => {
                    cuts.append(placed)?;
                    ocuts.append(outs.len())?;
                    vcuts.append(viols.len())?;
                    let job = &jobs[j];
                    let prev_py = match last_py[job.chain].take() {
                        Some(p) => p,
                        None => PyBytes::new(py, &job.prev).unbind(),
                    };
                    let digest_py = PyBytes::new(py, &job.digest);
                    let record_data = PyBytes::new(py, &data[job.data.0..job.data.1]);
                    seals.append(untracked((record_data, job.seq, prev_py, &digest_py).into_pyobject(py)?))?;
                    last_py[job.chain] = Some(digest_py.unbind());
                }
                Step::Failed(e) => {
                    cuts.append(placed)?;
                    ocuts.append(outs.len())?;
                    vcuts.append(viols.len())?;
                    seals.append(e.into_value(py))?;
                }
            }
        }
        let new_heads = PyDict::new(py);
        for ((text, seq, hash), last) in heads_now.iter().zip(last_py) {
            let hash = match last {
                Some(p) => p.into_bound(py),
                None => PyBytes::new(py, hash),
            };
            new_heads.set_item(*text, (*seq, hash))?;
        }
        PyTuple::new(py, [seals.into_any(), over.into_any(), outs.into_any(), sealed.into_any(), labels.into_any(),
                          whens.into_any(), cuts.into_any(), new_heads.into_any(), ocuts.into_any(), viols.into_any(),
                          vcuts.into_any()])
    }
}
