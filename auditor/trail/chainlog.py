"""One chain's signed-checkpoint state for a writer other than the file store: the daemon.

The API the daemon calls (pure: no Kafka here; the runner produces what it returns)::

    # on assignment, from the chain's last valid checkpoint in the checkpoint topic (never from
    # unsigned records, and never from a new genesis when the chain has a checkpoint):
    log = ChainLog.restore(stored, keys.verifier)        # or ChainLog.genesis(chain_id)
    # per batch, for each chain the batch touches, in the transaction that carries its records:
    data, sealed = log.seal(record)                      # canonical bytes for the audit topic
    ...
    stored = log.checkpoint(now, keys.signer)            # covers every record sealed so far
    key, value, headers = checkpoint_message(stored)     # -> produce to the checkpoint topic
    # if the transaction aborts, roll the chain back to what the topic holds:
    log = saved_copy   (ChainLog.copy() before the batch)

Checkpoint-topic messages: ``key`` = the origin (``<key name>/<chain id>``, UTF-8), ``value`` =
the signed note, headers ``auditor.kind`` (``checkpoint``; ``cosigned`` for a note that adds
witness cosignatures to one already published), ``auditor.range`` (the compact range: 32-byte
hashes, concatenated), ``auditor.prev`` (decimal size of the previous checkpoint) and
``auditor.proof`` (the RFC 9162 consistency proof from it, concatenated hashes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from auditor.errors import TrailCorruption
from auditor.trail.chain import ChainHead, seal_bytes
from auditor.trail.checkpoint import SignedCheckpoint, StoredCheckpoint, make_checkpoint
from auditor.trail.hashing import HASH_SIZE
from auditor.trail.keys import Signer, Verifier
from auditor.trail.merkle import MerkleRange, RangeNodes, consistency_proof
from auditor.trail.note import Note
from auditor.trail.record import AuditRecord

KIND, RANGE, PREV, PROOF = "auditor.kind", "auditor.range", "auditor.prev", "auditor.proof"
Headers = list[tuple[str, bytes]]


class ChainLog:
    """A chain's head, Merkle range and last checkpoint; enough to seal and sign what follows."""

    def __init__(self, head: ChainHead, rng: MerkleRange, cp_size: int, cp_roots: Sequence[bytes]) -> None:
        self.head = head
        self.range = rng
        self.cp_size = cp_size
        self.cp_roots = tuple(cp_roots)
        self.since: list[bytes] = []

    @classmethod
    def genesis(cls, chain_id: str) -> ChainLog:
        return cls(ChainHead.genesis(chain_id), MerkleRange(), 0, ())

    @classmethod
    def restore(cls, stored: StoredCheckpoint, verifier: Verifier) -> ChainLog:
        """Continue a chain from its last checkpoint alone (the records before it may be gone)."""
        signed = stored.open(verifier)
        try:
            rng = MerkleRange.restore(signed.size, stored.range, signed.root)
        except ValueError as exc:
            raise TrailCorruption(f"{signed.chain_id}: {exc}", chain=signed.chain_id) from exc
        return cls(signed.head, rng, signed.size, stored.range)

    def copy(self) -> ChainLog:
        other = ChainLog(self.head, self.range.copy(), self.cp_size, self.cp_roots)
        other.since = list(self.since)
        return other

    @property
    def chain_id(self) -> str:
        return self.head.chain_id

    def seal(self, record: AuditRecord) -> tuple[bytes, ChainHead]:
        """Place ``record`` after the head: its canonical bytes, and the new head."""
        data, self.head = seal_bytes(self.head, record)
        self.range.append(self.head.head_hash)
        self.since.append(self.head.head_hash)
        return data, self.head

    def extend(self, record_hash: bytes, seq: int) -> None:
        """Take in a record sealed elsewhere (its hash and seq must follow the head)."""
        if seq != self.head.size:
            raise TrailCorruption(f"chain {self.chain_id}: seq {seq} does not follow {self.head.size - 1}",
                                  chain=self.chain_id, seq=seq)
        self.head = ChainHead(self.chain_id, seq + 1, record_hash)
        self.range.append(record_hash)
        self.since.append(record_hash)

    def extend_many(self, first_seq: int, record_hashes: Sequence[bytes]) -> None:
        """:meth:`extend` with consecutive records sealed elsewhere (seqs ``first_seq``, ``first_seq + 1``,
        ...; the caller checked their links), the Merkle range in one step."""
        if not record_hashes:
            return
        if first_seq != self.head.size:
            raise TrailCorruption(f"chain {self.chain_id}: seq {first_seq} does not follow {self.head.size - 1}",
                                  chain=self.chain_id, seq=first_seq)
        self.head = ChainHead(self.chain_id, first_seq + len(record_hashes), record_hashes[-1])
        self.range.extend(record_hashes)
        self.since.extend(record_hashes)

    def checkpoint(self, now: datetime, signer: Signer) -> StoredCheckpoint:
        """Sign the chain at its head, with the compact range and the proof from the last checkpoint."""
        note = make_checkpoint(self.head, self.range, now, signer)
        proof = consistency_proof(self.cp_size, self.head.size, RangeNodes(self.cp_size, self.cp_roots, self.since))
        stored = StoredCheckpoint(note.to_bytes(), self.range.subtree_roots, self.cp_size, tuple(proof))
        self.cp_size, self.cp_roots, self.since = self.head.size, self.range.subtree_roots, []
        return stored


# ---------------------------------------------------------------- the checkpoint-topic message

def _join(hashes: Sequence[bytes]) -> bytes:
    return b"".join(hashes)


def _split(data: bytes, what: str) -> tuple[bytes, ...]:
    if len(data) % HASH_SIZE:
        raise TrailCorruption(f"checkpoint message header {what} is not a whole number of hashes")
    return tuple(data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE))


def checkpoint_message(stored: StoredCheckpoint, *, cosigned: bool = False) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of a checkpoint-topic message."""
    from auditor.trail.checkpoint import Checkpoint

    origin = Checkpoint.parse(Note.parse(stored.note).text).origin
    headers: Headers = [(KIND, b"cosigned" if cosigned else b"checkpoint")]
    if not cosigned:
        headers += [(RANGE, _join(stored.range)), (PREV, str(stored.prev_size).encode()),
                    (PROOF, _join(stored.proof))]
    return origin.encode(), stored.note, headers


def stored_from_message(value: bytes,
                        headers: Sequence[tuple[str, bytes | None]] | None) -> tuple[str, StoredCheckpoint]:
    """(kind, stored checkpoint) of a checkpoint-topic message (raises TrailCorruption)."""
    h = {k: (v or b"") for k, v in headers or ()}
    kind = h.get(KIND, b"checkpoint").decode("ascii", "replace")
    try:
        prev = int(h.get(PREV, b"0") or b"0")
    except ValueError as exc:
        raise TrailCorruption("checkpoint message header auditor.prev is not a number") from exc
    return kind, StoredCheckpoint(value, _split(h.get(RANGE, b""), RANGE), prev, _split(h.get(PROOF, b""), PROOF))


def latest_per_chain(entries: Sequence[StoredCheckpoint], verifier: Verifier) -> dict[str, SignedCheckpoint]:
    """The largest valid checkpoint of each chain (for restoring heads on assignment)."""
    out: dict[str, SignedCheckpoint] = {}
    for entry in entries:
        try:
            signed = entry.open(verifier)
        except TrailCorruption:
            continue
        if signed.chain_id not in out or signed.size > out[signed.chain_id].size:
            out[signed.chain_id] = signed
    return out
