//! The trail writer's step for records sealed elsewhere (`TrailWriter.append_encoded`), one call
//! per batch: frame each record, check that it hashes to its record_hash and links to its chain's
//! head, extend the chain's RFC 6962 compact range, and concatenate the accepted records' bytes
//! for the next segment block.
//!
//! The reference is `auditor/trail/encoded.py::chain_encoded_py`; both return the same
//! `(data, accepted, chains, bad)` and the tests compare them. Framing reads varints exactly as the
//! Python `read_long` does (up to 10 bytes, non-minimal ones accepted, values kept in i128 so a
//! damaged length or seq compares as the unbounded Python int would).

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use sha2::{Digest, Sha256};

use crate::merkle;
use crate::record::{genesis, RECORD_PREFIX};

/// A record located in its bytes: chain id, seq, links and where it ends.
struct Frame<'a> {
    chain: &'a str,
    seq: i128,
    prev: &'a [u8],
    end: usize,
}

/// `auditor.trail.canonical.read_long`: a zig-zag varint of at most 10 bytes; None where the
/// Python one raises IndexError.
fn read_long(buf: &[u8], mut pos: usize) -> Option<(i128, usize)> {
    let mut b = *buf.get(pos)?;
    pos += 1;
    let mut n = u128::from(b & 0x7F);
    let mut shift = 7;
    while b & 0x80 != 0 {
        if shift > 63 {
            return None;
        }
        b = *buf.get(pos)?;
        pos += 1;
        n |= u128::from(b & 0x7F) << shift;
        shift += 7;
    }
    let n = n as i128; // < 2**70
    Some(((n >> 1) ^ -(n & 1), pos))
}

/// `iter_frames(data, 1)`'s one frame; None where it raises TrailCorruption.
fn frame(buf: &[u8]) -> Option<Frame<'_>> {
    let size = buf.len() as i128;
    let (n, pos) = read_long(buf, 0)?;
    if n < 0 || pos as i128 + n > size {
        return None;
    }
    let end_id = pos + n as usize;
    let chain = std::str::from_utf8(&buf[pos..end_id]).ok()?;
    let (seq, pos) = read_long(buf, end_id)?;
    let prev = buf.get(pos..pos + 32).unwrap_or(&[]);
    let (body_len, pos) = read_long(buf, pos + 32)?;
    if body_len < 0 || seq < 0 || pos as i128 + body_len + 32 > size {
        return None;
    }
    Some(Frame { chain, seq, prev, end: pos + body_len as usize + 32 })
}

fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([RECORD_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// One chain as the batch finds it and leaves it.
struct Chain {
    id: String,
    size: i128,
    head: [u8; 32],
    /// The compact range: leaf count and perfect-subtree roots, largest first.
    range_size: u64,
    stack: Vec<[u8; 32]>,
    leaves: Vec<[u8; 32]>,
}

impl Chain {
    /// `MerkleRange.append`, and the leaf kept for the batch's result.
    fn append(&mut self, leaf: [u8; 32]) {
        merkle::append(&mut self.stack, &mut self.range_size, leaf);
        self.leaves.push(leaf);
    }
}

fn hash32(v: &Bound<'_, PyAny>, what: &str) -> PyResult<[u8; 32]> {
    let b = v.cast::<PyBytes>().map_err(|_| pyo3::exceptions::PyTypeError::new_err(format!("{what} is not bytes")))?;
    b.as_bytes().try_into().map_err(|_| pyo3::exceptions::PyValueError::new_err(format!("{what} is not 32 bytes")))
}

/// The chain's state from the writer's dicts: its head (`ChainHead`, else genesis) and its
/// compact range (`MerkleRange`, else empty).
fn load_chain(id: &str, heads: &Bound<'_, PyDict>, ranges: &Bound<'_, PyDict>) -> PyResult<Chain> {
    let (size, head) = match heads.get_item(id)? {
        Some(h) => (h.getattr("size")?.extract::<i64>()?, hash32(&h.getattr("head_hash")?, "a head hash")?),
        None => (0, genesis(id)),
    };
    let (range_size, stack) = match ranges.get_item(id)? {
        Some(r) => {
            let roots = r.getattr("subtree_roots")?;
            let stack = roots.try_iter()?.map(|x| hash32(&x?, "a subtree root")).collect::<PyResult<Vec<_>>>()?;
            let size = r.getattr("size")?.extract::<u64>()?;
            // merkle::append expects one root per one bit of the size (else it panics)
            if stack.len() != size.count_ones() as usize {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "{} subtree roots cannot be a range of {size} leaves",
                    stack.len()
                )));
            }
            (size, stack)
        }
        None => (0, Vec::new()),
    };
    Ok(Chain { id: id.to_string(), size: i128::from(size), head, range_size, stack, leaves: Vec::new() })
}

/// Check and chain `records` (each one whole sealed record) after the heads in `heads`
/// (chain id -> ChainHead) and the compact ranges in `ranges` (chain id -> MerkleRange), which
/// are only read. Returns `(data, accepted, chains, bad)`: the first `accepted` records' bytes joined;
/// per chain they advanced, in order of first appearance, `(chain_id, size, head_hash,
/// range_size, roots, leaves)`; and the index of the first record that does not frame, hash or
/// link (None when all do). Records after `bad` are not looked at.
#[pyfunction]
pub fn chain_encoded<'py>(
    py: Python<'py>,
    records: Vec<PyBackedBytes>,
    heads: &Bound<'py, PyDict>,
    ranges: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyTuple>> {
    // Frame every record (no hashing yet) and load each chain's state once.
    let mut chains: Vec<Chain> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut framed: Vec<(usize, i128, &[u8], usize)> = Vec::with_capacity(records.len());
    for r in &records {
        let Some(f) = frame(r) else { break };
        let c = match index.get(f.chain) {
            Some(&c) => c,
            None => {
                chains.push(load_chain(f.chain, heads, ranges)?);
                index.insert(f.chain, chains.len() - 1);
                chains.len() - 1
            }
        };
        framed.push((c, f.seq, f.prev, f.end));
    }
    // Hash, link and extend the ranges (without the GIL for a batch worth the switch).
    let mut check = || {
        let mut total = 0usize;
        for (i, &(c, seq, prev, end)) in framed.iter().enumerate() {
            let data: &[u8] = &records[i];
            if end != data.len() {
                return (i, total);
            }
            let digest = leaf_hash(&data[..end - 32]);
            let chain = &mut chains[c];
            if digest[..] != data[end - 32..] || seq != chain.size || prev != chain.head {
                return (i, total);
            }
            chain.size += 1;
            chain.head = digest;
            chain.append(digest);
            total += data.len();
        }
        (framed.len(), total)
    };
    let (accepted, total) = if framed.len() >= 64 { py.detach(check) } else { check() };
    let data = PyBytes::new_with(py, total, |buf| {
        let mut at = 0;
        for r in &records[..accepted] {
            buf[at..at + r.len()].copy_from_slice(r);
            at += r.len();
        }
        Ok(())
    })?;
    let out = PyList::empty(py);
    for c in chains.iter().filter(|c| !c.leaves.is_empty()) {
        let roots = PyTuple::new(py, c.stack.iter().map(|h| PyBytes::new(py, h)))?;
        let leaves = PyList::new(py, c.leaves.iter().map(|h| PyBytes::new(py, h)))?;
        out.append((PyString::new(py, &c.id), c.size as i64, PyBytes::new(py, &c.head), c.range_size, roots, leaves))?;
    }
    let bad = if accepted < records.len() { Some(accepted) } else { None };
    PyTuple::new(py, [data.into_any(), accepted.into_pyobject(py)?.into_any(), out.into_any(), bad.into_pyobject(py)?.into_any()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_read_as_python_reads_them() {
        assert_eq!(read_long(&[0x02], 0), Some((1, 1)));
        assert_eq!(read_long(&[0x82, 0x00], 0), Some((1, 2))); // non-minimal: accepted
        assert_eq!(read_long(&[0x80], 0), None);
        let mut ten = vec![0xFF; 9];
        ten.push(0x7F); // 70 bits: beyond i64, as a Python int
        assert_eq!(read_long(&ten, 0), Some((-(1i128 << 69), 10)));
        assert_eq!(read_long(&[0xFF; 11], 0), None);
    }
}
