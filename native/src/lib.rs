//! `auditor._native`: the compiled hot path. Python API: `auditor/native.py` (use that, not this).
//!
//! * [`EventCodec`] decodes a batch of Kafka message values (single-object or Confluent framing)
//!   strictly, writes each event's canonical encoding, digests it (SHA-256) and extracts facts.
//!   The validation and hashing of a whole batch run without the GIL.
//! * [`RecordSealer`] encodes a batch of audit records and seals them into their hash chains.
//!
//! Both are driven by the `.avsc` text given at construction; nothing here knows today's fields.

mod codec;
mod extract;
mod lazy;
mod merkle;
mod record;
mod schema;
mod shadow;
mod trail;
mod violation;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use sha2::{Digest, Sha256};

use codec::Program;
use extract::{Plan, Symbols};
use record::{head_from_py, Layout, RecordEncoder};
use schema::Schema;

const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
const CONFLUENT_MAGIC: u8 = 0;

/// One decoded event: its canonical encoding, SHA-256 of it, and its facts (or whole datum).
#[pyclass(frozen, get_all, module = "auditor._native")]
struct Decoded {
    canonical: Py<PyBytes>,
    digest: Py<PyBytes>,
    facts: Py<PyAny>,
}

/// One refused message: a bounded reason label, a message without payload values, and the
/// Confluent schema id when the refusal is only that the id is not known yet.
#[pyclass(frozen, get_all, module = "auditor._native")]
struct Refused {
    reason: &'static str,
    message: String,
    schema_id: Option<u32>,
}

struct Refusal {
    reason: &'static str,
    message: String,
    schema_id: Option<u32>,
}

fn refuse(reason: &'static str, message: String) -> Refusal {
    Refusal { reason, message, schema_id: None }
}

fn fp_array(fp: &[u8]) -> PyResult<[u8; 8]> {
    fp.try_into().map_err(|_| PyValueError::new_err("a schema fingerprint is 8 bytes"))
}

#[pyclass(frozen, module = "auditor._native")]
struct EventCodec {
    reader: Schema,
    sym: Symbols,
    programs: HashMap<[u8; 8], Program>,
    /// Confluent schema id -> fingerprint; grows as a registry answers (any thread may add).
    ids: RwLock<HashMap<u32, [u8; 8]>>,
    max_bytes: usize,
    plan: Plan,
    fact_names: Vec<String>,
}

impl EventCodec {
    fn decode_one(&self, value: Option<&[u8]>, arena: &mut Vec<u8>) -> Result<(usize, usize, [u8; 32]), Refusal> {
        let Some(value) = value else {
            return Err(refuse("undecodable", "message has no value (tombstone)".into()));
        };
        if value.len() > self.max_bytes {
            return Err(refuse(
                "oversize",
                format!("message of {} bytes exceeds the {}-byte limit", value.len(), self.max_bytes),
            ));
        }
        let (program, body) = if value.len() >= 10 && value[..2] == SINGLE_OBJECT_MAGIC {
            let fp: [u8; 8] = value[2..10].try_into().expect("8 bytes");
            let p = self.programs.get(&fp).ok_or_else(|| {
                refuse("unknown_schema", format!("writer schema fingerprint {} is not allow-listed", hex(&fp)))
            })?;
            (p, &value[10..])
        } else if value.len() >= 5 && value[0] == CONFLUENT_MAGIC {
            let id = u32::from_be_bytes(value[1..5].try_into().expect("4 bytes"));
            let fp = self.ids.read().expect("ids lock").get(&id).copied();
            let p = fp.and_then(|fp| self.programs.get(&fp)).ok_or(Refusal {
                reason: "unknown_schema",
                message: format!("schema id {id} is not configured"),
                schema_id: Some(id),
            })?;
            (p, &value[5..])
        } else {
            return Err(refuse("undecodable", "neither Avro single-object encoding nor Confluent wire format".into()));
        };
        let start = arena.len();
        program.canonicalize(body, arena).map_err(|e| refuse(e.fault.reason(), e.message()))?;
        let digest: [u8; 32] = Sha256::digest(&arena[start..]).into();
        Ok((start, arena.len(), digest))
    }
}

impl EventCodec {
    /// The `Decoded` of one event: its canonical bytes, digest and facts tuple.
    fn decoded(&self, py: Python<'_>, canonical: &[u8], digest: &[u8; 32], slots: &mut [Option<Py<PyAny>>]) -> PyResult<Py<Decoded>> {
        slots.iter_mut().for_each(|s| *s = None);
        let mut cur = wire::Cursor::new(canonical);
        extract::facts(py, &self.reader, &self.sym, &self.plan, &mut cur, slots)?;
        let facts = PyTuple::new(py, slots.iter_mut().map(|s| s.take().unwrap_or_else(|| py.None())))?.into_any().unbind();
        Py::new(py, Decoded { canonical: PyBytes::new(py, canonical).unbind(), digest: PyBytes::new(py, digest).unbind(), facts })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[pymethods]
impl EventCodec {
    /// `reader`: the reader schema's JSON text. `writers`: (fingerprint, schema JSON) of every
    /// allow-listed writer schema, the reader's own included. `confluent_ids`: schema id ->
    /// fingerprint. `facts`: dotted field paths to extract (default: every leaf field).
    #[new]
    #[pyo3(signature = (reader, writers, confluent_ids=None, max_bytes=262_144, facts=None))]
    fn new(
        py: Python<'_>,
        reader: &str,
        writers: Vec<(Vec<u8>, String)>,
        confluent_ids: Option<HashMap<u32, Vec<u8>>>,
        max_bytes: usize,
        facts: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let reader = Schema::parse(reader).map_err(|e| PyValueError::new_err(format!("reader schema: {e}")))?;
        let mut programs = HashMap::new();
        for (fp, text) in writers {
            let w = Schema::parse(&text).map_err(|e| PyValueError::new_err(format!("writer schema: {e}")))?;
            let p = Program::compile(&w, &reader)
                .map_err(|e| PyValueError::new_err(format!("writer schema cannot be read as the reader: {e}")))?;
            programs.insert(fp_array(&fp)?, p);
        }
        let mut ids = HashMap::new();
        for (id, fp) in confluent_ids.unwrap_or_default() {
            let fp = fp_array(&fp)?;
            if !programs.contains_key(&fp) {
                return Err(PyKeyError::new_err(format!("schema id {id} maps to fingerprint {} which is not allow-listed", hex(&fp))));
            }
            ids.insert(id, fp);
        }
        let fact_names = facts.unwrap_or_else(|| extract::leaf_paths(&reader));
        let plan = extract::build_plan(&reader, &fact_names).map_err(PyValueError::new_err)?;
        let sym = Symbols::new(py, &reader);
        Ok(EventCodec { reader, sym, programs, ids: RwLock::new(ids), max_bytes, plan, fact_names })
    }

    /// The names of the facts tuple's items, in order.
    #[getter]
    fn fact_names(&self) -> Vec<String> {
        self.fact_names.clone()
    }

    /// Map a Confluent schema id to an allow-listed writer fingerprint (e.g. after a registry look-up).
    fn add_confluent_id(&self, schema_id: u32, fingerprint: &[u8]) -> PyResult<()> {
        let fp = fp_array(fingerprint)?;
        if !self.programs.contains_key(&fp) {
            return Err(PyKeyError::new_err(format!("fingerprint {} is not allow-listed", hex(&fp))));
        }
        self.ids.write().expect("ids lock").insert(schema_id, fp);
        Ok(())
    }

    /// Decode a batch of message values (bytes, or None for a tombstone), in order.
    /// Each becomes a `Decoded` (facts as a tuple, or with `datum=True` the whole event as
    /// fastavro's schemaless_reader returns it) or a `Refused`.
    #[pyo3(signature = (values, datum=false))]
    fn decode_batch(&self, py: Python<'_>, values: Vec<Option<PyBackedBytes>>, datum: bool) -> PyResult<Py<PyList>> {
        let total: usize = values.iter().map(|v| v.as_ref().map_or(0, |b| b.len())).sum();
        let (arena, results) = py.detach(|| {
            let mut arena = Vec::with_capacity(total + total / 4);
            let results: Vec<_> = values.iter().map(|v| self.decode_one(v.as_deref(), &mut arena)).collect();
            (arena, results)
        });
        let out = PyList::empty(py);
        let mut slots: Vec<Option<Py<PyAny>>> = (0..self.fact_names.len()).map(|_| None).collect();
        for r in results {
            match r {
                Ok((start, end, digest)) => {
                    let canonical = &arena[start..end];
                    let mut cur = wire::Cursor::new(canonical);
                    let facts = if datum {
                        extract::value(py, &self.reader, &self.sym, self.reader.root, &mut cur, false)?
                    } else {
                        slots.iter_mut().for_each(|s| *s = None);
                        extract::facts(py, &self.reader, &self.sym, &self.plan, &mut cur, &mut slots)?;
                        PyTuple::new(py, slots.iter_mut().map(|s| s.take().unwrap_or_else(|| py.None())))?
                            .into_any()
                            .unbind()
                    };
                    let d = Decoded {
                        canonical: PyBytes::new(py, canonical).unbind(),
                        digest: PyBytes::new(py, &digest).unbind(),
                        facts,
                    };
                    out.append(Py::new(py, d)?)?;
                }
                Err(e) => {
                    out.append(Py::new(py, Refused { reason: e.reason, message: e.message, schema_id: e.schema_id })?)?;
                }
            }
        }
        Ok(out.unbind())
    }
}

#[pyclass(frozen, module = "auditor._native")]
struct RecordSealer {
    enc: RecordEncoder,
    /// Layouts of records sealed from a facts tuple (`add_layout`), by handle.
    layouts: RwLock<Vec<Arc<Layout>>>,
}

#[pymethods]
impl RecordSealer {
    #[new]
    fn new(py: Python<'_>, schema: &str) -> PyResult<Self> {
        Ok(RecordSealer { enc: RecordEncoder::new(py, schema).map_err(PyValueError::new_err)?, layouts: RwLock::new(Vec::new()) })
    }

    /// The body of a record: its fields from record_type to the one before record_hash.
    fn encode_body<'py>(&self, py: Python<'py>, record: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(512);
        self.enc.encode_body(record, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Register how records are built from a facts tuple (see `record::Layout`); returns its handle.
    fn add_layout(&self, spec: &Bound<'_, PyDict>) -> PyResult<usize> {
        let layout = self.enc.layout(spec)?;
        let mut layouts = self.layouts.write().expect("layouts lock");
        layouts.push(Arc::new(layout));
        Ok(layouts.len() - 1)
    }

    /// `value` encoded with the type of the record's field `name` (for a `("raw", k)` layout source).
    fn encode_field<'py>(&self, py: Python<'py>, name: &str, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.enc.encode_field(name, value)?))
    }

    /// Seal `records` in order after the chain heads in `heads` (chain_id -> (size, head_hash);
    /// a chain not in it starts at its genesis). Returns one (bytes, seq, prev_hash, record_hash)
    /// per record, and updates `heads` only once the whole batch is encoded.
    ///
    /// With `layout` (a handle from `add_layout`), an item that is a plain tuple (not a record
    /// object, which is a NamedTuple) is `(facts, chain_id, ...)` and its body is built as the
    /// layout says, reading `batch` for the layout's batch values.
    #[pyo3(signature = (records, heads, layout=None, batch=None))]
    fn seal_batch<'py>(
        &self,
        py: Python<'py>,
        records: &Bound<'py, PyAny>,
        heads: &Bound<'py, PyDict>,
        layout: Option<usize>,
        batch: Option<&Bound<'py, PyTuple>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let layout = match layout {
            Some(i) => Some(
                self.layouts.read().expect("layouts lock").get(i).cloned()
                    .ok_or_else(|| PyKeyError::new_err(format!("no layout {i}")))?,
            ),
            None => None,
        };
        let batch_values = match (&layout, batch) {
            (Some(l), Some(b)) => self.enc.batch_values(l, b)?,
            (Some(l), None) => self.enc.batch_values(l, &PyTuple::empty(py))?,
            _ => Vec::new(),
        };
        // per chain: (next seq, head hash, the head hash as a Python bytes once made)
        let mut work: HashMap<String, (i64, [u8; 32], Option<Py<PyBytes>>)> = HashMap::new();
        let out = PyList::empty(py);
        let mut body = Vec::with_capacity(512);
        let mut data = Vec::with_capacity(1024);
        for r in records.try_iter()? {
            let r = r?;
            // a plain tuple whose first element is bytes: (record body, chain_id, ...), built by FactMemo.decide
            let built = match r.cast::<PyTuple>() {
                Ok(t) if r.is_exact_instance_of::<PyTuple>() => t.get_item(0)?.cast_into::<PyBytes>().ok(),
                _ => None,
            };
            let item = match &layout {
                Some(l) if built.is_none() && r.is_exact_instance_of::<PyTuple>() => Some((l, r.cast::<PyTuple>()?.clone())),
                _ => None,
            };
            let chain = match (&item, &built) {
                (Some((_, t)), _) => t.get_item(1)?.cast_into::<PyString>()
                    .map_err(|_| PyTypeError::new_err("an item's second element is its chain id"))?.to_str()?.to_string(),
                (None, Some(_)) => r.cast::<PyTuple>()?.get_item(1)?.cast_into::<PyString>()
                    .map_err(|_| PyTypeError::new_err("an item's second element is its chain id"))?.to_str()?.to_string(),
                (None, None) => self.enc.chain_id(&r)?,
            };
            let (seq, prev, prev_py) = match work.remove(&chain) {
                Some(h) => h,
                None => match heads.get_item(&chain)? {
                    Some(h) => {
                        let (s, p) = head_from_py(&h)?;
                        (s, p, None)
                    }
                    None => (0, record::genesis(&chain), None),
                },
            };
            body.clear();
            match (&item, &built) {
                (Some((l, t)), _) => self.enc.encode_item(l, &batch_values, t, &mut body)?,
                (None, Some(b)) => body.extend_from_slice(b.as_bytes()),
                (None, None) => self.enc.encode_body(&r, &mut body)?,
            }
            data.clear();
            let digest = record::seal(&chain, seq, &prev, &body, &mut data);
            let prev_py = prev_py.unwrap_or_else(|| PyBytes::new(py, &prev).unbind());
            let digest_py = PyBytes::new(py, &digest).unbind();
            out.append(lazy::untracked((PyBytes::new(py, &data), seq, prev_py, digest_py.clone_ref(py)).into_pyobject(py)?))?;
            work.insert(chain, (seq + 1, digest, Some(digest_py)));
        }
        for (chain, (size, _, hash)) in work {
            heads.set_item(chain, (size, hash.expect("set with every record")))?;
        }
        Ok(out)
    }
}

/// SHA-256(0x03 || chain_id): the prev_hash of a chain's first record.
#[pyfunction]
fn genesis_hash<'py>(py: Python<'py>, chain_id: &str) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &record::genesis(chain_id))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EventCodec>()?;
    m.add_class::<Decoded>()?;
    m.add_class::<Refused>()?;
    m.add_class::<RecordSealer>()?;
    m.add_class::<shadow::FactMemo>()?;
    m.add_class::<shadow::HitBatch>()?;
    m.add_class::<lazy::LazyRecord>()?;
    m.add_function(wrap_pyfunction!(genesis_hash, m)?)?;
    m.add_function(wrap_pyfunction!(violation::json_ascii, m)?)?;
    m.add_function(wrap_pyfunction!(violation::iso_micros, m)?)?;
    m.add_function(wrap_pyfunction!(merkle::merkle_extend, m)?)?;
    m.add_function(wrap_pyfunction!(merkle::merkle_root, m)?)?;
    m.add_function(wrap_pyfunction!(trail::chain_encoded, m)?)?;
    Ok(())
}
