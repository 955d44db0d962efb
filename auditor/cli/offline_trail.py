"""The trail writer behind ``auditor check --trail``: one record per audited or rejected line.

Idempotent: an event already in the trail (same event id, in a ``file:`` chain) or a rejected
line already recorded (same input digest) is not appended again, so running ``check --trail``
twice on one file leaves the trail as the first run left it. The chain is named after the file's
name, not the path it was given by (``file:events.jsonl`` from any working directory; standard
input is ``file:stdin``).
"""

from __future__ import annotations

import hashlib
import socket
from datetime import UTC, datetime
from pathlib import Path, PurePath

from auditor.events.codec import DecodedLine, canonical_bytes
from auditor.policy import Decision
from auditor.trail.chainid import is_file_chain
from auditor.trail.keys import KeyRing
from auditor.trail.record import AuditRecord, LedgerFacts, SourceRef, build_record, build_rejection
from auditor.trail.replay import iter_records
from auditor.trail.store import TrailWriter

COMMIT_EVERY = 1000


def chain_file_name(source: str) -> str:
    """The file part of a chain id: the file's name, whatever path led to it."""
    return "stdin" if source in ("-", "<stdin>") else PurePath(source).name


class OfflineTrail:
    def __init__(self, writer: TrailWriter, keys: KeyRing, seen: set[str] | None = None) -> None:
        self.writer = writer
        self.pseudonymizer = keys.pseudonymizer
        self.instance_id = f"check@{socket.gethostname()}"
        self.pending = 0
        self.seen = seen if seen is not None else set()
        self.appended = 0
        self.skipped = 0

    @classmethod
    def open(cls, trail_dir: Path, keys_dir: Path | None) -> OfflineTrail:
        keys = KeyRing.resolve(keys_dir)
        writer = TrailWriter.open(trail_dir, keys)
        seen = {_key(r) for r in iter_records(trail_dir) if is_file_chain(r.chain_id)}
        return cls(writer, keys, seen)

    def record(self, row: DecodedLine, decision: Decision, *, ledger: LedgerFacts | None = None) -> None:
        assert row.event is not None
        if row.event.event_id in self.seen:
            self.skipped += 1
            return
        # the digest is over the canonical Avro encoding, as on the Kafka path (Avro input carries it)
        canonical = row.canonical if row.canonical is not None else canonical_bytes(row.event)
        rec = build_record(row.event, decision, _source(row), self.pseudonymizer, self.instance_id,
                           datetime.now(UTC), digest=hashlib.sha256(canonical).digest(), ledger=ledger)
        self._append(rec, row.event.event_id)

    def reject(self, row: DecodedLine) -> None:
        assert row.error is not None
        digest = hashlib.sha256(row.raw).digest()
        if digest.hex() in self.seen:
            self.skipped += 1
            return
        rec = build_rejection(digest, row.error.reason, _message(row), _source(row),
                              pseudonym_key_id=self.pseudonymizer.key_id, instance_id=self.instance_id,
                              now=datetime.now(UTC))
        self._append(rec, digest.hex())

    def _append(self, rec: AuditRecord, key: str) -> None:
        self.writer.append([rec])
        self.seen.add(key)
        self.appended += 1
        self.pending += 1
        if self.pending >= COMMIT_EVERY:
            self.writer.commit()
            self.pending = 0

    def close(self) -> None:
        self.writer.close()


def _key(r: AuditRecord) -> str:
    return r.event_id if r.event_id is not None else r.input_digest.hex()


def _source(row: DecodedLine) -> SourceRef:
    return SourceRef.from_file(chain_file_name(row.source), row.line)


def _message(row: DecodedLine) -> str:
    """The rejection's message for the trail: the fault, without the file name (in the source)."""
    assert row.error is not None
    text = str(row.error)
    prefix = f"{row.error.source}:{row.error.line}: " if row.error.line is not None else f"{row.error.source}: "
    return text.removeprefix(prefix)[:500]
