"""RFC 6962 hashing: the one place the domain-separation prefixes and the hash function live.

Every module that hashes a record, a Merkle node or a chain genesis calls these functions, as
transparency-dev's ``rfc6962`` hasher is the one type every caller there uses::

    0x00  leaf      record_hash = SHA-256(0x00 || the record's bytes before its hash)
    0x01  node      SHA-256(0x01 || left || right)
    0x03  genesis   prev_hash of seq 0 = SHA-256(0x03 || chain id), so chains cannot be spliced

(0x02 was the signed-JSON checkpoint prefix of the first trail format; checkpoints are now C2SP
signed notes, whose text cannot be mistaken for a record or a node.)
"""

from __future__ import annotations

import hashlib

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
GENESIS_PREFIX = b"\x03"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash; for a record, ``data`` is its encoding without the final 32 bytes."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return _sha256(NODE_PREFIX + left + right).digest()


def genesis_hash(chain_id: str) -> bytes:
    """The ``prev_hash`` of a chain's first record."""
    return _sha256(GENESIS_PREFIX + chain_id.encode()).digest()
