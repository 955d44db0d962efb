"""RFC 6962 Merkle tree hashing: pure functions over 32-byte hashes, no I/O.

Leaves are the chain's record hashes, which already are RFC 6962 leaf hashes
(``SHA-256(0x00 || record bytes)``, see :mod:`auditor.trail.chain`). Interior nodes are
``SHA-256(0x01 || left || right)``; a tree of ``n`` leaves splits at the largest power of two
below ``n``.

:class:`MerkleRange` keeps only the roots of the perfect subtrees that make up the tree so far
(a "compact range"), so appending is amortised O(1) and the root is O(log n): checkpoints never
re-hash the chain.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


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


class MerkleRange:
    """Incremental RFC 6962 tree over leaf hashes: a stack of perfect-subtree roots."""

    __slots__ = ("size", "_stack")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

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
        for leaf in leaves:
            self.append(leaf)

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


def inclusion_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path of ``leaves[index]`` (reference implementation over an in-memory list)."""
    return [root_of(leaves[lo:hi]) for lo, hi in path_ranges(index, len(leaves))]


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
    """RFC 9162 section 2.1.3.2: the root a path implies, or None if the path is malformed."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if len(p) != 32 or sn == 0:
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
    return len(leaf) == 32 and root_from_inclusion(index, size, leaf, path) == root
