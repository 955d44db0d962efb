//! RFC 6962 Merkle hashing for the daemon's checkpoints, a batch of leaves per call:
//! extending a compact range (the roots of the perfect subtrees, largest first) and the root of a
//! list of leaves. The leaves are record hashes, which already are leaf hashes. The reference is
//! `auditor/trail/merkle.py` (`MerkleRange.append`, `root_of`); tests/unit/native/test_native_merkle.py
//! compares the two.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList};
use sha2::{Digest, Sha256};

const NODE_PREFIX: u8 = 0x01;

/// RFC 6962 interior node: SHA-256(0x01 || left || right). The one definition (trail.rs uses it too).
pub(crate) fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn hashes(values: &[PyBackedBytes], what: &str) -> PyResult<Vec<[u8; 32]>> {
    values
        .iter()
        .map(|v| <[u8; 32]>::try_from(&v[..]).map_err(|_| PyValueError::new_err(format!("{what} must be 32-byte hashes"))))
        .collect()
}

/// Append `leaf` to the compact range `stack` of `size` leaves (as `MerkleRange.append`).
pub(crate) fn append(stack: &mut Vec<[u8; 32]>, size: &mut u64, leaf: [u8; 32]) {
    stack.push(leaf);
    let mut n = *size;
    while n & 1 == 1 {
        let right = stack.pop().expect("a subtree per one bit");
        let last = stack.last_mut().expect("a subtree per one bit");
        *last = node_hash(last, &right);
        n >>= 1;
    }
    *size += 1;
}

fn to_list<'py>(py: Python<'py>, stack: &[[u8; 32]]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, stack.iter().map(|h| PyBytes::new(py, h)))
}

/// The compact range of `size` leaves with subtree roots `roots`, extended by `leaves`:
/// `(new size, new roots)`. Raises ValueError when `roots` cannot be a range of `size` leaves.
#[pyfunction]
pub fn merkle_extend<'py>(
    py: Python<'py>,
    size: u64,
    roots: Vec<PyBackedBytes>,
    leaves: Vec<PyBackedBytes>,
) -> PyResult<(u64, Bound<'py, PyList>)> {
    if roots.len() != size.count_ones() as usize {
        return Err(PyValueError::new_err(format!("{} subtree roots cannot be a range of {size} leaves", roots.len())));
    }
    let mut stack = hashes(&roots, "subtree roots")?;
    let leaves = hashes(&leaves, "leaves")?;
    let mut size = size;
    py.detach(|| {
        for leaf in leaves {
            append(&mut stack, &mut size, leaf);
        }
    });
    Ok((size, to_list(py, &stack)?))
}

/// The Merkle tree root of `leaves` (RFC 6962 MTH; SHA-256 of nothing for none).
#[pyfunction]
pub fn merkle_root<'py>(py: Python<'py>, leaves: Vec<PyBackedBytes>) -> PyResult<Bound<'py, PyBytes>> {
    let leaves = hashes(&leaves, "leaves")?;
    let root = py.detach(|| -> [u8; 32] {
        if leaves.is_empty() {
            return Sha256::digest(b"").into();
        }
        let (mut stack, mut size) = (Vec::with_capacity(64), 0u64);
        for leaf in leaves {
            append(&mut stack, &mut size, leaf);
        }
        let mut r = stack.pop().expect("one leaf at least");
        while let Some(h) = stack.pop() {
            r = node_hash(&h, &r);
        }
        r
    });
    Ok(PyBytes::new(py, &root))
}
