//! Python objects made per sealed record, made so that the garbage collector has nothing to do
//! with them: a batch makes several per record, and every one the collector tracks is traversed
//! at each collection while the batch lives (a 5,000-event batch is ~15,000 of them).
//!
//! * [`LazyRecord`]: the unsealed `AuditRecord` of a record sealed from its facts, built from
//!   the record's bytes on first use (`auditor.stream.processor` used a Python class for it).
//! * [`untracked`]: a tuple (or tuple subclass instance) of atomic values, not tracked by the
//!   collector, as CPython itself untracks a tuple that cannot be part of a reference cycle.

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString};

/// The unsealed `AuditRecord` of a record the compiled sealer built from a facts tuple: its chain
/// id at hand, the rest decoded from the record's bytes on first read (few callers ever look).
/// Equal to (and hashed as) that `AuditRecord`; any other attribute is the record's.
#[pyclass(frozen, module = "auditor._native")]
pub struct LazyRecord {
    #[pyo3(get)]
    chain_id: Py<PyString>,
    data: Py<PyBytes>,
    record: PyOnceLock<Py<PyAny>>,
}

static RECORD_FROM_BYTES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl LazyRecord {
    /// A new instance, not tracked by the garbage collector: it refers only to a str and a bytes
    /// (and, once read, to the decoded record, which never refers back to it), so it cannot be
    /// part of a reference cycle.
    pub fn untracked<'py>(py: Python<'py>, chain_id: Py<PyString>, data: Py<PyBytes>) -> PyResult<Bound<'py, LazyRecord>> {
        let obj = Bound::new(py, LazyRecord { chain_id, data, record: PyOnceLock::new() })?;
        // SAFETY: a live object of a GC type; untracking an object that holds no container that
        // could lead back to it only spares the collector from traversing it
        unsafe { ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) };
        Ok(obj)
    }

    fn get_record<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyAny>> {
        let r = self.record.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            let decode = RECORD_FROM_BYTES.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
                Ok(py.import(intern!(py, "auditor.trail.canonical"))?.getattr(intern!(py, "record_from_bytes"))?.unbind())
            })?;
            let sealed = decode.bind(py).call1((self.data.bind(py),))?;
            let unsealed = PyDict::new(py);
            unsealed.set_item(intern!(py, "seq"), -1)?;
            unsealed.set_item(intern!(py, "prev_hash"), PyBytes::new(py, b""))?;
            unsealed.set_item(intern!(py, "record_hash"), PyBytes::new(py, b""))?;
            Ok(sealed.call_method(intern!(py, "_replace"), (), Some(&unsealed))?.unbind())
        })?;
        Ok(r.bind(py))
    }
}

#[pymethods]
impl LazyRecord {
    #[new]
    fn new(chain_id: Py<PyString>, data: Py<PyBytes>) -> Self {
        LazyRecord { chain_id, data, record: PyOnceLock::new() }
    }

    /// The record (decoded from its bytes once, with seq -1 and empty hashes: unsealed).
    fn record(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.get_record(py)?.clone().unbind())
    }

    fn __getattr__<'py>(&self, py: Python<'py>, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        self.get_record(py)?.getattr(name)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let mine = self.get_record(py)?;
        match other.cast::<LazyRecord>() {
            Ok(o) => mine.eq(o.get().get_record(py)?),
            Err(_) => mine.eq(other),
        }
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.get_record(py)?.hash()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("LazyRecord({})", self.get_record(py)?.repr()?.to_str()?))
    }
}

/// `obj` (a new tuple or tuple-subclass instance) no longer tracked by the garbage collector,
/// when no item may ever be tracked: an object of a type the collector does not know (str, bytes,
/// int, float, None, ...), an exact tuple it does not track, or a [`LazyRecord`] (which cannot
/// lead back to anything: see [`LazyRecord::untracked`]). Such a tuple cannot be part of a
/// reference cycle: CPython's `_PyTuple_MaybeUntrack` untracks exact tuples on the same rule.
pub fn untracked<'py, T>(obj: Bound<'py, T>) -> Bound<'py, T> {
    let py = obj.py();
    let lazy = py.get_type::<LazyRecord>().as_type_ptr();
    // SAFETY: reading the items of a live tuple (or tuple subclass instance) and their types
    unsafe {
        let p = obj.as_ptr();
        if ffi::PyTuple_Check(p) != 0 && ffi::PyObject_GC_IsTracked(p) != 0 {
            let n = ffi::PyTuple_GET_SIZE(p);
            let atomic = (0..n).all(|i| {
                let item = ffi::PyTuple_GET_ITEM(p, i);
                ffi::PyObject_IS_GC(item) == 0
                    || (ffi::PyTuple_CheckExact(item) != 0 && ffi::PyObject_GC_IsTracked(item) == 0)
                    || ffi::Py_TYPE(item) == lazy
            });
            if atomic {
                ffi::PyObject_GC_UnTrack(p.cast());
            }
        }
    }
    obj
}
