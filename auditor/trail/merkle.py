"""RFC 6962 / RFC 9162 Merkle trees over the chain's record hashes: pure functions, no I/O.

Leaves are record hashes, which already are RFC 6962 leaf hashes (:mod:`auditor.trail.hashing`).
A tree of ``n`` leaves splits at the largest power of two below ``n``.

* :class:`MerkleRange` keeps only the roots of the perfect subtrees that make up the tree so far
  (a *compact range*): appending is amortised O(1), the root O(log n). Stored with each
  checkpoint, it lets a writer continue a chain without re-reading its records
  (:meth:`MerkleRange.restore` checks it against the signed root first).
* Inclusion proofs (RFC 9162 §2.1.3) and consistency proofs (§2.1.4) are generated from a
  *node oracle*, ``node(lo, hi) -> root of leaves [lo, hi)``, so the same algorithm serves a list
  of leaves in memory and a writer that holds only a compact range plus the leaves since its
  last checkpoint (:class:`RangeNodes`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from auditor import _native
from auditor.trail.hashing import EMPTY_ROOT, HASH_SIZE, NODE_PREFIX, _sha256, leaf_hash, node_hash

__all__ = ["EMPTY_ROOT", "MerkleRange", "PathBuilder", "RangeNodes", "consistency_proof", "inclusion_path",
           "inclusion_proof", "leaf_hash", "list_nodes", "node_hash", "path_ranges", "root_from_inclusion",
           "root_from_range", "root_of", "verify_consistency", "verify_inclusion"]

#: ``node(lo, hi)``: the Merkle root of leaves ``[lo, hi)``.
NodeFn = Callable[[int, int], bytes]


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """Reference (recursive) root of a list of leaf hashes; for tests and small trees."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


#: the compiled batch forms (native/src/merkle.rs; None while a checkout's module predates them)
_merkle_extend = getattr(_native, "merkle_extend", None)
_merkle_root = getattr(_native, "merkle_root", None)


def leaves_root(leaves: Sequence[bytes]) -> bytes:
    """:func:`root_of`, in one compiled call where built (a checkpoint's leaves since the last one)."""
    if _merkle_root is None or len(leaves) < 8:
        return root_of(leaves)
    return bytes(_merkle_root(list(leaves)))


def range_sizes(size: int) -> list[int]:
    """Sizes of the perfect subtrees of a compact range over ``size`` leaves, largest first."""
    return [1 << b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]


def root_from_range(size: int, roots: Sequence[bytes]) -> bytes | None:
    """The tree root a compact range implies, or None if it cannot be a range of ``size`` leaves."""
    if size < 0 or len(roots) != bin(size).count("1") or any(len(r) != HASH_SIZE for r in roots):
        return None
    if not roots:
        return EMPTY_ROOT
    r = roots[-1]
    for h in reversed(roots[:-1]):
        r = node_hash(h, r)
    return r


class MerkleRange:
    """Incremental RFC 6962 tree over leaf hashes: a stack of perfect-subtree roots."""

    __slots__ = ("size", "_stack")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    @classmethod
    def restore(cls, size: int, roots: Sequence[bytes], root: bytes) -> MerkleRange:
        """A range continued from a stored compact range, after checking it against ``root``."""
        if root_from_range(size, roots) != root:
            raise ValueError(f"the compact range does not lead to the root of size {size}")
        rng = cls()
        rng.size = size
        rng._stack = list(roots)
        return rng

    def reset(self, size: int, roots: Sequence[bytes]) -> MerkleRange:
        """Make this the range of ``size`` leaves with these subtree roots, not checked: for a range
        extended elsewhere from this one (the compiled step of :mod:`auditor.trail.encoded`)."""
        self.size = size
        self._stack = list(roots)
        return self

    def append(self, leaf: bytes) -> None:
        stack = self._stack
        stack.append(leaf)
        n = self.size
        while n & 1:  # each trailing one bit of the old size is a subtree to merge with
            right = stack.pop()
            stack[-1] = _sha256(NODE_PREFIX + stack[-1] + right).digest()
            n >>= 1
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        """:meth:`append` each leaf; a batch in one compiled call (native/src/merkle.rs) where built."""
        leaves = leaves if isinstance(leaves, list) else list(leaves)
        if _merkle_extend is None or len(leaves) < 8:
            for leaf in leaves:
                self.append(leaf)
            return
        self.size, self._stack = _merkle_extend(self.size, self._stack, leaves)

    @property
    def subtree_roots(self) -> tuple[bytes, ...]:
        """Roots of the perfect subtrees, largest (leftmost) first."""
        return tuple(self._stack)

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        stack = self._stack
        r = stack[-1]
        for h in reversed(stack[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> MerkleRange:
        other = MerkleRange()
        other.size = self.size
        other._stack = list(self._stack)
        return other


# ---------------------------------------------------------------- node oracles

def list_nodes(leaves: Sequence[bytes]) -> NodeFn:
    """Node oracle over leaves held in memory."""
    return lambda lo, hi: root_of(leaves[lo:hi])


class RangeNodes:
    """Node oracle of a tree of ``old_size + len(leaves)`` leaves, knowing only the compact range
    at ``old_size`` and the leaves appended since: enough for every node a consistency proof from
    ``old_size`` (or an inclusion proof of a newer leaf) needs."""

    def __init__(self, old_size: int, old_roots: Sequence[bytes], leaves: Sequence[bytes]) -> None:
        self.old_size = old_size
        self.leaves = leaves
        self._perfect: dict[tuple[int, int], bytes] = {}
        lo = 0
        for size, root in zip(range_sizes(old_size), old_roots, strict=True):
            self._perfect[(lo, lo + size)] = root
            lo += size

    @property
    def size(self) -> int:
        return self.old_size + len(self.leaves)

    def __call__(self, lo: int, hi: int) -> bytes:
        known = self._perfect.get((lo, hi))
        if known is not None:
            return known
        m = self.old_size
        if lo >= m:
            return leaves_root(self.leaves[lo - m:hi - m])
        if hi - lo < 2:
            raise ValueError(f"leaf {lo} lies before the compact range's end ({m}) and is not stored")
        k = _split(hi - lo)
        return node_hash(self(lo, lo + k), self(lo + k, hi))


# ---------------------------------------------------------------- inclusion proofs

def path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges ``[lo, hi)`` whose roots form the audit path of ``index``, deepest first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is outside a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo = lo + k
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, node: NodeFn) -> list[bytes]:
    """RFC 9162 §2.1.3.1 audit path of leaf ``index`` in the tree of ``size`` leaves."""
    return [node(lo, hi) for lo, hi in path_ranges(index, size)]


def inclusion_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path of ``leaves[index]`` (reference implementation over an in-memory list)."""
    return inclusion_proof(index, len(leaves), list_nodes(leaves))


class PathBuilder:
    """Builds one leaf's audit path from a stream of leaves, in O(log n) memory."""

    def __init__(self, index: int, size: int) -> None:
        self.index, self.size = index, size
        self._ranges = path_ranges(index, size)
        self._trees = [MerkleRange() for _ in self._ranges]
        self._position = 0
        self.leaf: bytes | None = None

    def add(self, leaf: bytes) -> None:
        i = self._position
        self._position += 1
        if i == self.index:
            self.leaf = leaf
            return
        for (lo, hi), tree in zip(self._ranges, self._trees, strict=True):
            if lo <= i < hi:
                tree.append(leaf)
                return

    @property
    def complete(self) -> bool:
        return self._position >= self.size

    def path(self) -> list[bytes]:
        if not self.complete:
            raise ValueError(f"only {self._position} of {self.size} leaves seen")
        return [tree.root() for tree in self._trees]


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2: the root a path implies, or None if the path is malformed."""
    if not 0 <= index < size or len(leaf) != HASH_SIZE:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if len(p) != HASH_SIZE or sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    return root_from_inclusion(index, size, leaf, path) == root


# ---------------------------------------------------------------- consistency proofs

def consistency_proof(old_size: int, new_size: int, node: NodeFn) -> list[bytes]:
    """RFC 9162 §2.1.4.1 ``PROOF(m, D[n])``: the nodes that show the tree of ``old_size`` leaves
    is a prefix of the tree of ``new_size`` leaves. Empty when ``old_size`` is 0 or equal."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    proof: list[bytes] = []
    lo, m, n, complete = 0, old_size, new_size, True  # SUBPROOF(m, D[lo:lo+n], complete)
    while m != n:
        k = _split(n)
        if m <= k:
            proof.append(node(lo + k, lo + n))
            n = k
        else:
            proof.append(node(lo, lo + k))
            lo, m, n, complete = lo + k, m - k, n - k, False
    if not complete:
        proof.append(node(lo, lo + m))
    proof.reverse()
    return proof


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does ``proof`` show the old tree is a prefix of the new one?"""
    if not 0 <= old_size <= new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
