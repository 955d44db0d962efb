"""The trail writer behind ``auditor check --trail``: one record per audited or rejected line."""

from __future__ import annotations

import hashlib
import socket
from datetime import UTC, datetime
from pathlib import Path

from auditor.events.codec import DecodedLine, canonical_bytes
from auditor.policy import Decision
from auditor.trail.keys import KeyRing
from auditor.trail.record import SourceRef, build_record, build_rejection
from auditor.trail.store import TrailWriter

COMMIT_EVERY = 1000


class OfflineTrail:
    def __init__(self, writer: TrailWriter, keys: KeyRing) -> None:
        self.writer = writer
        self.pseudonymizer = keys.pseudonymizer
        self.instance_id = f"check@{socket.gethostname()}"
        self.pending = 0

    @classmethod
    def open(cls, trail_dir: Path, keys_dir: Path | None) -> OfflineTrail:
        keys = KeyRing.resolve(keys_dir)
        return cls(TrailWriter.open(trail_dir, keys), keys)

    def record(self, row: DecodedLine, decision: Decision) -> None:
        assert row.event is not None
        rec = build_record(row.event, decision, SourceRef.from_file(row.source, row.line), self.pseudonymizer,
                           self.instance_id, datetime.now(UTC),
                           digest=hashlib.sha256(canonical_bytes(row.event)).digest())
        self._append(rec)

    def reject(self, row: DecodedLine) -> None:
        assert row.error is not None
        rec = build_rejection(hashlib.sha256(row.raw).digest(), row.error.reason, str(row.error)[:500],
                              SourceRef.from_file(row.source, row.line),
                              pseudonym_key_id=self.pseudonymizer.key_id, instance_id=self.instance_id,
                              now=datetime.now(UTC))
        self._append(rec)

    def _append(self, rec: object) -> None:
        self.writer.append([rec])  # type: ignore[list-item]
        self.pending += 1
        if self.pending >= COMMIT_EVERY:
            self.writer.commit()
            self.pending = 0

    def close(self) -> None:
        self.writer.close()
