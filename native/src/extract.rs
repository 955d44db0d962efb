//! Python values out of canonical bytes (already validated, reader schema): either the whole
//! datum, shaped as fastavro's schemaless_reader returns it, or a flat tuple of named facts.
//!
//! Facts are record fields named by dotted paths (`"actor.type"`), reached through records and
//! `["null", record]` unions (a null parent gives None). Their values are hashable: arrays become
//! tuples, maps tuples of `(key, value)` pairs in key order, records tuples of their fields.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::schema::{Node, NodeId, Schema};
use crate::wire::{Cursor, Fault};

#[derive(Debug, Clone)]
pub enum Plan {
    Skip(NodeId),
    Take(usize, NodeId),
    Record(Vec<Plan>),
    /// A `["null", record]` union: the record's branch index and its plan.
    Optional(i64, Box<Plan>),
}

/// The record inside a `["null", record]` union: (its branch index, its node).
fn optional_record(s: &Schema, id: NodeId) -> Option<(i64, NodeId)> {
    if let Node::Union(b) = s.node(id) {
        if b.len() == 2 {
            for (i, j) in [(0usize, 1usize), (1, 0)] {
                if matches!(s.node(b[i]), Node::Record { .. }) && matches!(s.node(b[j]), Node::Null) {
                    return Some((i as i64, b[i]));
                }
            }
        }
    }
    None
}

/// Every leaf field path of the schema, in field order (the default fact list).
pub fn leaf_paths(s: &Schema) -> Vec<String> {
    fn walk(s: &Schema, id: NodeId, prefix: &str, out: &mut Vec<String>) {
        if let Node::Record { fields, .. } = s.node(id) {
            for f in fields {
                let path = if prefix.is_empty() { f.name.clone() } else { format!("{prefix}.{}", f.name) };
                match s.node(f.ty) {
                    Node::Record { .. } => walk(s, f.ty, &path, out),
                    _ => match optional_record(s, f.ty) {
                        Some((_, rec)) => walk(s, rec, &path, out),
                        None => out.push(path),
                    },
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(s, s.root, "", &mut out);
    out
}

pub fn build_plan(s: &Schema, paths: &[String]) -> Result<Plan, String> {
    let split: Vec<(Vec<&str>, usize)> = paths.iter().enumerate().map(|(i, p)| (p.split('.').collect(), i)).collect();
    let mut used = vec![false; paths.len()];
    let plan = plan_record(s, s.root, &split, 0, &mut used)?;
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(format!("fact '{}' names no field of the schema", paths[i]));
    }
    Ok(plan)
}

fn plan_record(
    s: &Schema,
    id: NodeId,
    paths: &[(Vec<&str>, usize)],
    level: usize,
    used: &mut [bool],
) -> Result<Plan, String> {
    let Node::Record { fields, .. } = s.node(id) else {
        return Err("facts can only be taken from records".into());
    };
    let mut plans = Vec::with_capacity(fields.len());
    for f in fields {
        let mine: Vec<(Vec<&str>, usize)> =
            paths.iter().filter(|(p, _)| p.len() > level && p[level] == f.name).cloned().collect();
        let whole: Vec<usize> = mine.iter().filter(|(p, _)| p.len() == level + 1).map(|(_, i)| *i).collect();
        let deeper = mine.len() > whole.len();
        if whole.len() > 1 || (!whole.is_empty() && deeper) {
            return Err(format!("fact '{}' is named more than once or together with its parts", f.name));
        }
        if let Some(&slot) = whole.first() {
            used[slot] = true;
            plans.push(Plan::Take(slot, f.ty));
        } else if deeper {
            plans.push(match s.node(f.ty) {
                Node::Record { .. } => plan_record(s, f.ty, &mine, level + 1, used)?,
                _ => match optional_record(s, f.ty) {
                    Some((branch, rec)) => Plan::Optional(branch, Box::new(plan_record(s, rec, &mine, level + 1, used)?)),
                    None => return Err(format!("field '{}' is neither a record nor an optional record", f.name)),
                },
            });
        } else {
            plans.push(Plan::Skip(f.ty));
        }
    }
    Ok(Plan::Record(plans))
}

fn fault(f: Fault) -> PyErr {
    pyo3::exceptions::PyValueError::new_err(format!("canonical bytes unreadable: {}", f.message()))
}

/// Skip one value (canonical or not) without building anything.
pub fn skip(s: &Schema, id: NodeId, cur: &mut Cursor) -> Result<(), Fault> {
    match s.node(id) {
        Node::Null => {}
        Node::Boolean => {
            cur.take(1)?;
        }
        Node::Int | Node::Long(_) | Node::Enum { .. } => {
            cur.long()?;
        }
        Node::Float => {
            cur.take(4)?;
        }
        Node::Double => {
            cur.take(8)?;
        }
        Node::Bytes | Node::String => {
            cur.bytes()?;
        }
        Node::Fixed { size, .. } => {
            cur.take(*size)?;
        }
        Node::Record { fields, .. } => {
            for f in fields {
                skip(s, f.ty, cur)?;
            }
        }
        Node::Union(b) => {
            let i = cur.long()?;
            let b = usize::try_from(i).ok().and_then(|i| b.get(i)).ok_or(Fault::BadUnion(i))?;
            skip(s, *b, cur)?;
        }
        Node::Array(_) | Node::Map(_) => {
            let (item, is_map) = match s.node(id) {
                Node::Array(i) => (*i, false),
                Node::Map(v) => (*v, true),
                _ => unreachable!(),
            };
            loop {
                let mut n = cur.long()?;
                if n == 0 {
                    break;
                }
                if n < 0 {
                    n = n.checked_neg().ok_or(Fault::CountTooLarge)?;
                    cur.long()?;
                }
                for _ in 0..n {
                    if is_map {
                        cur.bytes()?;
                    }
                    skip(s, item, cur)?;
                }
            }
        }
    }
    Ok(())
}

pub struct Symbols {
    /// Per node id: the enum's symbols as ready Python strings.
    pub by_node: Vec<Option<Vec<Py<PyString>>>>,
    /// Per node id: a record's field names as ready Python strings.
    pub names: Vec<Option<Vec<Py<PyString>>>>,
}

impl Symbols {
    pub fn new(py: Python<'_>, s: &Schema) -> Symbols {
        let by_node = s
            .nodes
            .iter()
            .map(|n| match n {
                Node::Enum { symbols, .. } => Some(symbols.iter().map(|x| PyString::intern(py, x).unbind()).collect()),
                _ => None,
            })
            .collect();
        let names = s
            .nodes
            .iter()
            .map(|n| match n {
                Node::Record { fields, .. } => Some(fields.iter().map(|f| PyString::intern(py, &f.name).unbind()).collect()),
                _ => None,
            })
            .collect();
        Symbols { by_node, names }
    }
}

/// One value as a Python object: fastavro's shapes (`facts == false`) or hashable ones.
pub fn value(py: Python<'_>, s: &Schema, sym: &Symbols, id: NodeId, cur: &mut Cursor, facts: bool) -> PyResult<Py<PyAny>> {
    Ok(match s.node(id) {
        Node::Null => py.None(),
        Node::Boolean => cur.boolean().map_err(fault)?.into_pyobject(py)?.to_owned().into_any().unbind(),
        Node::Int | Node::Long(_) => cur.long().map_err(fault)?.into_pyobject(py)?.into_any().unbind(),
        Node::Float => {
            let b = cur.take(4).map_err(fault)?;
            f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).into_pyobject(py)?.into_any().unbind()
        }
        Node::Double => {
            let b = cur.take(8).map_err(fault)?;
            f64::from_le_bytes(b.try_into().expect("8 bytes")).into_pyobject(py)?.into_any().unbind()
        }
        Node::Bytes => PyBytes::new(py, cur.bytes().map_err(fault)?).into_any().unbind(),
        Node::Fixed { size, .. } => PyBytes::new(py, cur.take(*size).map_err(fault)?).into_any().unbind(),
        Node::String => PyString::new(py, cur.string().map_err(fault)?).into_any().unbind(),
        Node::Enum { .. } => {
            let i = cur.long().map_err(fault)?;
            let syms = sym.by_node[id].as_ref().expect("enum symbols");
            let s = usize::try_from(i).ok().and_then(|i| syms.get(i)).ok_or_else(|| fault(Fault::BadEnum(i)))?;
            s.clone_ref(py).into_any()
        }
        Node::Union(b) => {
            let i = cur.long().map_err(fault)?;
            let b = *usize::try_from(i).ok().and_then(|i| b.get(i)).ok_or_else(|| fault(Fault::BadUnion(i)))?;
            value(py, s, sym, b, cur, facts)?
        }
        Node::Record { fields, .. } => {
            if facts {
                let mut items = Vec::with_capacity(fields.len());
                for f in fields {
                    items.push(value(py, s, sym, f.ty, cur, facts)?);
                }
                PyTuple::new(py, items)?.into_any().unbind()
            } else {
                let d = PyDict::new(py);
                let names = sym.names[id].as_ref().expect("record names");
                for (f, name) in fields.iter().zip(names) {
                    d.set_item(name.bind(py), value(py, s, sym, f.ty, cur, facts)?)?;
                }
                d.into_any().unbind()
            }
        }
        Node::Array(item) => {
            let mut items = Vec::new();
            block_items(cur, |cur| {
                items.push(value(py, s, sym, *item, cur, facts)?);
                Ok(())
            })?;
            if facts {
                PyTuple::new(py, items)?.into_any().unbind()
            } else {
                PyList::new(py, items)?.into_any().unbind()
            }
        }
        Node::Map(v) => {
            if facts {
                let mut items = Vec::new();
                block_items(cur, |cur| {
                    let k = PyString::new(py, cur.string().map_err(fault)?);
                    let val = value(py, s, sym, *v, cur, facts)?;
                    items.push(PyTuple::new(py, [k.into_any().unbind(), val])?);
                    Ok(())
                })?;
                PyTuple::new(py, items)?.into_any().unbind()
            } else {
                let d = PyDict::new(py);
                block_items(cur, |cur| {
                    let k = PyString::new(py, cur.string().map_err(fault)?);
                    d.set_item(k, value(py, s, sym, *v, cur, facts)?)?;
                    Ok(())
                })?;
                d.into_any().unbind()
            }
        }
    })
}

fn block_items(cur: &mut Cursor, mut each: impl FnMut(&mut Cursor) -> PyResult<()>) -> PyResult<()> {
    loop {
        let mut n = cur.long().map_err(fault)?;
        if n == 0 {
            return Ok(());
        }
        if n < 0 {
            n = n.checked_neg().ok_or_else(|| fault(Fault::CountTooLarge))?;
            cur.long().map_err(fault)?;
        }
        for _ in 0..n {
            each(cur)?;
        }
    }
}

/// Fill `slots` with the facts `plan` takes from one value.
pub fn facts(
    py: Python<'_>,
    s: &Schema,
    sym: &Symbols,
    plan: &Plan,
    cur: &mut Cursor,
    slots: &mut [Option<Py<PyAny>>],
) -> PyResult<()> {
    match plan {
        Plan::Skip(id) => skip(s, *id, cur).map_err(fault)?,
        Plan::Take(slot, id) => slots[*slot] = Some(value(py, s, sym, *id, cur, true)?),
        Plan::Record(fields) => {
            for p in fields {
                facts(py, s, sym, p, cur, slots)?;
            }
        }
        Plan::Optional(branch, inner) => {
            if cur.long().map_err(fault)? == *branch {
                facts(py, s, sym, inner, cur, slots)?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- facts without Python objects

/// A fact as a plain Rust value borrowing the canonical bytes (and the schema's enum symbols):
/// what [`value`] with `facts == true` would make a Python object of. Records, arrays and maps
/// are all `Tuple`, as they are all Python tuples there (a map is a tuple of `(key, value)`
/// pairs, each a 2-`Tuple`).
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    Tuple(Vec<Val<'a>>),
}

/// One value as a [`Val`] (the shapes of `value(.., facts = true)`).
pub fn val<'a>(s: &'a Schema, id: NodeId, cur: &mut Cursor<'a>) -> Result<Val<'a>, Fault> {
    Ok(match s.node(id) {
        Node::Null => Val::Null,
        Node::Boolean => Val::Bool(cur.boolean()?),
        Node::Int | Node::Long(_) => Val::Long(cur.long()?),
        Node::Float => {
            let b = cur.take(4)?;
            Val::Double(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        }
        Node::Double => Val::Double(f64::from_le_bytes(cur.take(8)?.try_into().expect("8 bytes"))),
        Node::Bytes => Val::Bytes(cur.bytes()?),
        Node::Fixed { size, .. } => Val::Bytes(cur.take(*size)?),
        Node::String => Val::Str(cur.string()?),
        Node::Enum { symbols, .. } => {
            let i = cur.long()?;
            Val::Str(usize::try_from(i).ok().and_then(|i| symbols.get(i)).ok_or(Fault::BadEnum(i))?.as_str())
        }
        Node::Union(b) => {
            let i = cur.long()?;
            let b = *usize::try_from(i).ok().and_then(|i| b.get(i)).ok_or(Fault::BadUnion(i))?;
            val(s, b, cur)?
        }
        Node::Record { fields, .. } => {
            let mut items = Vec::with_capacity(fields.len());
            for f in fields {
                items.push(val(s, f.ty, cur)?);
            }
            Val::Tuple(items)
        }
        Node::Array(item) => {
            let mut items = Vec::new();
            val_blocks(cur, |cur| {
                items.push(val(s, *item, cur)?);
                Ok(())
            })?;
            Val::Tuple(items)
        }
        Node::Map(v) => {
            let mut items = Vec::new();
            val_blocks(cur, |cur| {
                let k = Val::Str(cur.string()?);
                items.push(Val::Tuple(vec![k, val(s, *v, cur)?]));
                Ok(())
            })?;
            Val::Tuple(items)
        }
    })
}

fn val_blocks<'a>(cur: &mut Cursor<'a>, mut each: impl FnMut(&mut Cursor<'a>) -> Result<(), Fault>) -> Result<(), Fault> {
    loop {
        let mut n = cur.long()?;
        if n == 0 {
            return Ok(());
        }
        if n < 0 {
            n = n.checked_neg().ok_or(Fault::CountTooLarge)?;
            cur.long()?;
        }
        for _ in 0..n {
            each(cur)?;
        }
    }
}

/// Fill `slots` with the facts `plan` takes from one value, as [`Val`]s (as [`facts`] does).
pub fn fact_vals<'a>(s: &'a Schema, plan: &Plan, cur: &mut Cursor<'a>, slots: &mut [Val<'a>]) -> Result<(), Fault> {
    match plan {
        Plan::Skip(id) => skip(s, *id, cur)?,
        Plan::Take(slot, id) => slots[*slot] = val(s, *id, cur)?,
        Plan::Record(fields) => {
            for p in fields {
                fact_vals(s, p, cur, slots)?;
            }
        }
        Plan::Optional(branch, inner) => {
            if cur.long()? == *branch {
                fact_vals(s, inner, cur, slots)?;
            }
        }
    }
    Ok(())
}
