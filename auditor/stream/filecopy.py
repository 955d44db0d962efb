"""The optional file-store copy of the audit topic, in the offline trail's format.

Records arrive already sealed by the Kafka chain and are appended after their transaction
committed. The copy re-seals each record after its own head and insists on the same hash, so
the file chain is the Kafka chain byte for byte. A record already present (a replay after a
crash) is skipped; a gap (the process died between the Kafka commit and the file append) is
filled from the audit topic before going on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from auditor.errors import TrailCorruption
from auditor.logging import get_logger
from auditor.trail.record import AuditRecord
from auditor.trail.store import TrailWriter

log = get_logger("auditor.filecopy")

#: (chain_id, first_seq, stop_seq) -> the committed records of that chain in [first, stop)
Backfill = Callable[[str, int, int], list[AuditRecord]]


class FileCopy:
    def __init__(self, writer: TrailWriter, backfill: Backfill) -> None:
        self.writer = writer
        self.backfill = backfill

    def append(self, records: Iterable[AuditRecord]) -> None:
        for r in records:
            size = self.writer.head(r.chain_id).size
            if r.seq < size:
                continue
            if r.seq > size:
                missing = self.backfill(r.chain_id, size, r.seq)
                log.warning("file copy behind the audit topic; backfilled", chain=r.chain_id,
                            records=len(missing))
                self._append_exact(missing)
            self._append_exact([r])

    def catch_up(self, chain_id: str, committed: int) -> None:
        """Backfill a chain whose committed size in the audit topic exceeds the file's.

        Called when the chain's partition is assigned: without it a chain that receives no new
        input after a crash (between the Kafka commit and the file append) would stay short.
        """
        size = self.writer.head(chain_id).size
        if committed > size:
            missing = self.backfill(chain_id, size, committed)
            log.warning("file copy behind the audit topic; backfilled", chain=chain_id, records=len(missing))
            self._append_exact(missing)

    def _append_exact(self, records: list[AuditRecord]) -> None:
        for r in records:
            (sealed,) = self.writer.append([r])
            if sealed.seq != r.seq or sealed.record_hash != r.record_hash:
                raise TrailCorruption(f"file copy of chain {r.chain_id} diverges from the audit topic at seq "
                                      f"{r.seq}", chain=r.chain_id, seq=r.seq, expected=r.record_hash.hex(),
                                      actual=sealed.record_hash.hex())

    def commit(self) -> None:
        """Make appended records durable; sign checkpoints that are due (also when idle)."""
        self.writer.commit()
        self.writer.maybe_checkpoint()

    def checkpoint_ages(self) -> dict[str, float]:
        """Per chain: seconds its oldest unsigned record has waited for a checkpoint (0 if all signed)."""
        now = self.writer.clock()
        ages = {}
        for chain, head in self.writer.heads.items():
            size, at = self.writer._last_cp.get(chain, (0, now))
            ages[chain] = (now - at).total_seconds() if head.size > size else 0.0
        return ages

    def close(self) -> None:
        self.writer.close()
