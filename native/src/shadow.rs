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

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};
use sha2::{Digest, Sha256};

use crate::extract::{self, Val};
use crate::record::ValItem;
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
    facts: Vec<KeyFact>,
    /// memo key bytes -> entry index
    memo: HashMap<Vec<u8>, usize>,
}

struct Entry {
    decision: Vec<u8>,
    handle: Py<PyAny>,
    owner: usize,
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

/// An upper bound on the entries kept (Python's memo is bounded in bytes; this only guards memory).
const MAX_ENTRIES: usize = 1 << 20;
const MAX_PSEUDONYMS: usize = 1 << 16;
const MAX_PSEUDONYM_ID: usize = 256;
const MAX_CHAINS: usize = 10_000;
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
    chains: HashMap<(String, i64), Py<PyString>>,
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

fn opt_str(v: &Bound<'_, PyAny>) -> Option<String> {
    if v.is_none() {
        return Some(String::new());
    }
    let s = v.cast::<PyString>().ok()?.to_str().ok()?;
    Some(s.to_string())
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
    /// hits they count as. False when the event or a fact of the key is not mirrored here.
    #[allow(clippy::too_many_arguments)]
    fn learn(
        &mut self,
        codec: &Bound<'_, EventCodec>,
        value: &[u8],
        facts: Vec<String>,
        minor_age: i64,
        owner: usize,
        handle: Py<PyAny>,
        decision: Vec<u8>,
    ) -> PyResult<bool> {
        let codec = codec.get();
        self.check_codec(codec)?;
        let mut spec = Vec::with_capacity(facts.len());
        for f in &facts {
            spec.push(match f.as_str() {
                "actor.is_subject" => KeyFact::IsSubject,
                "subject.minor" => KeyFact::Minor(minor_age),
                "recipient.abroad" => KeyFact::Abroad,
                _ => match f.strip_prefix("attributes.") {
                    Some(name) => KeyFact::Attr(name.to_string()),
                    None => match self.names.get(f) {
                        Some(i) => KeyFact::Slot(*i),
                        None => return Ok(false),
                    },
                },
            });
        }
        let mut arena = Vec::with_capacity(value.len() + 64);
        let Ok(_) = codec.decode_one(Some(value), &mut arena) else { return Ok(false) };
        let mut slots = Vec::new();
        if !self.decode_vals(codec, &arena, &mut slots) {
            return Ok(false);
        }
        let (mut pkey, mut mkey) = (Vec::new(), Vec::new());
        if self.plan_key(&slots, value.len(), &mut pkey).is_none() || self.memo_key(&spec, &slots, &mut mkey).is_none() {
            return Ok(false);
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.reset();
        }
        let plan = self.plans.entry(pkey).or_insert_with(|| PlanEntry { facts: spec.clone(), memo: HashMap::new() });
        if plan.facts != spec {
            // the Python plan of this key reads other facts now: it is the one that counts
            plan.facts = spec;
            plan.memo.clear();
        }
        if let Some(&known) = plan.memo.get(&mkey) {
            // taught again (an event of a known key that `decide` left to Python: a time past
            // 2**53 us, an odd message, a record it could not encode): one entry per key, else
            // every such event would keep one more until MAX_ENTRIES
            self.entries[known] = Entry { decision, handle, owner };
            return Ok(true);
        }
        self.entries.push(Entry { decision, handle, owner });
        plan.memo.insert(mkey, self.entries.len() - 1);
        Ok(true)
    }

    /// Decode a batch (as `EventCodec.decode_batch`) and decide what the memo holds: per value, a
    /// hit `(record body, chain id, partition, occurred_at in seconds, handle, message, value)` or
    /// the `Decoded` / `Refused` of `decode_batch`. The body is the one `RecordSealer.seal_batch`
    /// builds under `layout` from the Python item (`batch`: the layout's batch values); `messages`
    /// give topic, partition and offset.
    #[pyo3(signature = (codec, sealer, layout, values, messages, batch))]
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &mut self,
        py: Python<'py>,
        codec: &Bound<'py, EventCodec>,
        sealer: &Bound<'py, RecordSealer>,
        layout: usize,
        values: &Bound<'py, PyList>,
        messages: &Bound<'py, PyList>,
        batch: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyList>> {
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
        let out = PyList::empty(py);
        let mut slots: Vec<Val<'_>> = Vec::with_capacity(self.n_facts);
        let mut pyslots: Vec<Option<Py<PyAny>>> = (0..self.n_facts).map(|_| None).collect();
        let (mut pkey, mut mkey, mut body) = (Vec::new(), Vec::new(), Vec::with_capacity(1024));
        for (((raw, value), msg), result) in raws.iter().zip(&bytes).zip(messages.iter()).zip(decoded) {
            let (start, end, digest) = match result {
                Ok(r) => r,
                Err(e) => {
                    out.append(Py::new(py, Refused { reason: e.reason, message: e.message, schema_id: e.schema_id })?)?;
                    continue;
                }
            };
            let canonical = &arena[start..end];
            let hit = self.hit(py, codec, &sealer.enc, &layout, &batch_values, canonical, &digest, value.map_or(0, <[u8]>::len),
                               &msg, &mut slots, &mut pkey, &mut mkey, &mut body)?;
            match hit {
                Some((chain, partition, when, entry)) => {
                    let e = &self.entries[entry];
                    let t = PyTuple::new(py, [
                        PyBytes::new(py, &body).into_any(),
                        chain.into_bound(py).into_any(),
                        partition.into_pyobject(py)?.into_any(),
                        PyFloat::new(py, when).into_any(),
                        e.handle.bind(py).clone(),
                        msg,
                        raw.clone(),
                    ])?;
                    let owner = e.owner;
                    if self.hits.len() <= owner {
                        self.hits.resize(owner + 1, 0);
                    }
                    self.hits[owner] += 1;
                    out.append(t)?;
                }
                None => out.append(codec.decoded(py, canonical, &digest, &mut pyslots)?)?,
            }
        }
        Ok(out)
    }
}

impl FactMemo {
    /// The record body of a decided event in `body`, and (chain, partition, seconds, entry); None: Python's.
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
    ) -> PyResult<Option<(Py<PyString>, i64, f64, usize)>> {
        if self.hmac.is_none() || self.plans.is_empty() || !self.decode_vals(codec, canonical, slots) {
            return Ok(None);
        }
        if self.plan_key(slots, raw_len, pkey).is_none() {
            return Ok(None);
        }
        let Some(plan) = self.plans.get(pkey.as_slice()) else { return Ok(None) };
        if self.memo_key(&plan.facts, slots, mkey).is_none() {
            return Ok(None);
        }
        let Some(&entry) = plan.memo.get(mkey.as_slice()) else { return Ok(None) };
        let Val::Long(when) = slots[self.at.time] else { return Ok(None) };
        if !(-EXACT_F64..=EXACT_F64).contains(&when) {
            return Ok(None);
        }
        let (Val::Str(aid), Val::Str(sid)) = (slots[self.at.aid].clone(), slots[self.at.sid].clone()) else { return Ok(None) };
        let (Some(actor), Some(subject)) = (self.pseudonym(aid), self.pseudonym(sid)) else { return Ok(None) };
        // a message whose methods fail or answer oddly: Python asks it again, and judges
        let Some(topic) = call(msg, intern!(py, "topic")).as_ref().and_then(opt_str) else { return Ok(None) };
        let Some(partition) = call(msg, intern!(py, "partition")).as_ref().and_then(opt_int) else { return Ok(None) };
        let Some(offset) = call(msg, intern!(py, "offset")).as_ref().and_then(opt_int) else { return Ok(None) };
        let key = (topic, partition);
        let chain = match self.chains.get(&key) {
            Some(c) => c.clone_ref(py),
            None => {
                if self.chains.len() >= MAX_CHAINS {
                    self.chains.clear();
                }
                let c = PyString::new(py, &format!("{}/{}", key.0, key.1)).unbind();
                self.chains.insert(key.clone(), c.clone_ref(py));
                c
            }
        };
        let chain_text = chain.bind(py).to_str()?.to_string();
        let item = ValItem {
            facts: slots,
            items: [
                Val::Null,
                Val::Str(&chain_text),
                Val::Str(&key.0),
                Val::Long(partition),
                Val::Long(offset),
                Val::Bytes(digest),
                Val::Str(std::str::from_utf8(&actor).expect("hex")),
                Val::Str(std::str::from_utf8(&subject).expect("hex")),
            ],
            decision: &self.entries[entry].decision,
        };
        body.clear();
        if enc.encode_val_item(layout, batch_values, &item, body).is_err() {
            return Ok(None);
        }
        Ok(Some((chain, partition, when as f64 / 1_000_000.0, entry)))
    }
}
