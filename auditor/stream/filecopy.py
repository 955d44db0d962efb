"""The optional file-store copy of the audit topic, in the offline trail's format.

Records arrive as the audit topic's bytes after their transaction committed, and are appended
unchanged (:meth:`TrailWriter.append_encoded`): the file chain is the Kafka chain byte for byte,
whatever encoder version sealed each record (re-sealing a decoded record would give other bytes
for a record written by another version, and stop the copy). Each record must hash to its
record hash and link to the file's head. A record already present (a replay after a crash) is
skipped; a gap (the process died between the Kafka commit and the file append) is filled from
the audit topic's bytes before going on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from auditor.logging import get_logger
from auditor.trail.canonical import iter_frames
from auditor.trail.store import TrailWriter

log = get_logger("auditor.filecopy")

#: (chain_id, first_seq, stop_seq) -> the committed records' bytes of that chain in [first, stop)
Backfill = Callable[[str, int, int], list[bytes]]


class FileCopy:
    def __init__(self, writer: TrailWriter, backfill: Backfill) -> None:
        self.writer = writer
        self.backfill = backfill

    def append(self, encoded: Iterable[bytes]) -> None:
        """Append audit-topic values (canonical record bytes) in chain order.

        The records go to the writer in runs, one :meth:`TrailWriter.append_encoded` call per run
        (one compiled call checks and chains a whole run): a run ends only where a gap must be
        backfilled first, and at the end. The outcome is that of appending them one by one: a
        replayed record is skipped, a gap is backfilled before the record after it, and a record
        that does not frame, hash or link raises once every record before it is appended."""
        run: list[bytes] = []
        #: per chain the run touched: the size the file's chain has once the run is appended
        sizes: dict[str, int] = {}

        def flush() -> None:
            nonlocal run
            if run:
                batch, run = run, []
                self.writer.append_encoded(batch)

        try:
            for data in encoded:
                (frame,) = iter_frames(data, 1)
                chain = frame.chain_id
                size = sizes.get(chain)
                if size is None:
                    size = self.writer.head(chain).size
                if frame.seq < size:
                    continue
                if frame.seq > size:
                    flush()
                    missing = self.backfill(chain, size, frame.seq)
                    log.warning("file copy behind the audit topic; backfilled", chain=chain, records=len(missing))
                    self.writer.append_encoded(missing)
                run.append(data)
                sizes[chain] = frame.seq + 1
        finally:
            flush()  # what is before a record that raised is appended, as one by one

    def catch_up(self, chain_id: str, committed: int) -> None:
        """Backfill a chain whose committed size in the audit topic exceeds the file's.

        Called when the chain's partition is assigned: without it a chain that receives no new
        input after a crash (between the Kafka commit and the file append) would stay short.
        """
        size = self.writer.head(chain_id).size
        if committed > size:
            missing = self.backfill(chain_id, size, committed)
            log.warning("file copy behind the audit topic; backfilled", chain=chain_id, records=len(missing))
            self.writer.append_encoded(missing)

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
