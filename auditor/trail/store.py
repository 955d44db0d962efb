"""The file store: segment files plus a checkpoint log, append-only, with group commit.

Layout of a trail directory::

    trail.json           format and checkpoint cadence (written once, atomically)
    segments/00000000.avro, 00000001.avro, ...   records of every chain, interleaved
    checkpoints.jsonl    one signed checkpoint per line
    .lock                held (flock) by the one writer

Durability order: ``append`` seals records into their chains and buffers them; ``commit`` writes
the buffer as one Avro block and fsyncs once; only then are checkpoints signed and appended (and
fsynced) for chains whose cadence is due. On open, a torn tail (a crash mid-block) is truncated
to the last complete block and every chain head and Merkle range is re-derived from the durable
records, never from memory.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Callable, Iterable

from auditor.errors import ConfigError, TrailCorruption, TrailError
from auditor.trail.chain import ChainHead, SealedBatch, seal_bytes
from auditor.trail.checkpoint import Checkpoint, make_checkpoint
from auditor.trail.keys import KeyRing
from auditor.trail.merkle import MerkleRange
from auditor.trail.record import AuditRecord
from auditor.trail.segment import (
    SEGMENTS_DIR,
    block_bytes,
    create_segment,
    fsync_dir,
    list_segments,
    scan_segment,
    segment_name,
)

TRAIL_JSON, CHECKPOINTS, LOCK = "trail.json", "checkpoints.jsonl", ".lock"
TRAIL_FORMAT = "auditor-trail/1"
_FLUSH_BYTES = 4 << 20


def _utcnow() -> datetime:
    return datetime.now(UTC)


def read_trail_meta(trail_dir: Path) -> dict:
    try:
        meta = json.loads((trail_dir / TRAIL_JSON).read_text())
    except FileNotFoundError:
        raise TrailError(f"{trail_dir} is not a trail (no {TRAIL_JSON})") from None
    except ValueError as exc:
        raise TrailCorruption(f"{trail_dir / TRAIL_JSON} is not valid JSON") from exc
    if meta.get("format") != TRAIL_FORMAT:
        raise TrailError(f"{trail_dir} has unknown trail format {meta.get('format')!r}")
    return dict(meta)


def read_checkpoint_lines(trail_dir: Path) -> tuple[list[str], bool]:
    """Complete lines of the checkpoint log, and whether a torn (unterminated) line followed."""
    try:
        data = (trail_dir / CHECKPOINTS).read_bytes()
    except FileNotFoundError:
        return [], False
    complete, _, rest = data.rpartition(b"\n")
    lines = [ln.decode("utf-8", "replace") for ln in complete.split(b"\n") if ln.strip()] if complete else []
    return lines, bool(rest.strip())


class TrailWriter:
    """Appends sealed records to a trail directory; one writer per directory."""

    def __init__(self, trail_dir: Path, keys: KeyRing, *, checkpoint_every: int, checkpoint_seconds: float,
                 segment_bytes: int, clock: Callable[[], datetime]) -> None:
        self.trail_dir = trail_dir
        self.keys = keys
        self.checkpoint_every, self.checkpoint_seconds = checkpoint_every, checkpoint_seconds
        self.segment_bytes, self.clock = segment_bytes, clock
        self.heads: dict[str, ChainHead] = {}
        self.ranges: dict[str, MerkleRange] = {}
        self._last_cp: dict[str, tuple[int, datetime]] = {}
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._segment_index = -1
        self._segment_size = 0
        self._sync = b""
        self._fh: IO[bytes] | None = None
        self._cp_fh: IO[bytes] | None = None
        self._lock_fh: IO[bytes] | None = None
        self._dirty = False
        self.closed = False

    # ------------------------------------------------------------ open and recovery

    @classmethod
    def open(cls, trail_dir: str | Path, keys: KeyRing, *, checkpoint_every: int = 10_000,
             checkpoint_seconds: float = 60.0, segment_bytes: int = 64 << 20,
             clock: Callable[[], datetime] = _utcnow) -> TrailWriter:
        trail_dir = Path(trail_dir).absolute()
        if keys.directory is not None:
            kd = Path(keys.directory).absolute()
            if kd == trail_dir or trail_dir in kd.parents:
                raise ConfigError(f"refusing to use keys from {kd}: it is inside the trail directory "
                                  f"{trail_dir}; keep the private key elsewhere")
        keys.signer  # noqa: B018 -- fail now, not at the first checkpoint, if the key is missing
        trail_dir.mkdir(parents=True, exist_ok=True)
        (trail_dir / SEGMENTS_DIR).mkdir(exist_ok=True)
        if not (trail_dir / TRAIL_JSON).exists():
            meta = {"format": TRAIL_FORMAT, "checkpoint_every": checkpoint_every,
                    "checkpoint_seconds": checkpoint_seconds}
            tmp = trail_dir / (TRAIL_JSON + ".tmp")
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(tmp, trail_dir / TRAIL_JSON)
            fsync_dir(trail_dir)
        read_trail_meta(trail_dir)
        writer = cls(trail_dir, keys, checkpoint_every=checkpoint_every,
                     checkpoint_seconds=checkpoint_seconds, segment_bytes=segment_bytes, clock=clock)
        writer._lock()
        try:
            writer._recover()
        except BaseException:
            writer._unlock()
            raise
        return writer

    def _lock(self) -> None:
        self._lock_fh = open(self.trail_dir / LOCK, "ab")  # noqa: SIM115 -- held while open
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            self._lock_fh = None
            raise TrailError(f"{self.trail_dir} is being written by another process") from None

    def _unlock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def _recover(self) -> None:
        lines, torn = read_checkpoint_lines(self.trail_dir)
        cp_path = self.trail_dir / CHECKPOINTS
        if torn:  # a crash while appending a checkpoint line: drop the partial line
            keep = sum(len(ln.encode()) + 1 for ln in lines)
            os.truncate(cp_path, keep)
        latest: dict[str, Checkpoint] = {}
        for line in lines:
            cp = Checkpoint.from_json(line)
            if cp.chain_id not in latest or cp.size >= latest[cp.chain_id].size:
                latest[cp.chain_id] = cp
        segments = list_segments(self.trail_dir)
        for pos, (index, path) in enumerate(segments):
            scan = scan_segment(path, index)
            last = pos == len(segments) - 1
            if scan.torn and not last:
                raise TrailCorruption(f"segment {path.name} is damaged before the end of the trail; "
                                      "run `auditor verify` on it")
            if scan.torn and not scan.blocks and scan.header_end == 0:
                path.unlink()  # crashed while creating it: no records in it
                fsync_dir(path.parent)
                continue
            if scan.torn:
                os.truncate(path, scan.good_end)
            for _, frame in scan.frames():
                head = self.heads.get(frame.chain_id) or ChainHead.genesis(frame.chain_id)
                if frame.seq != head.size or frame.prev_hash != head.head_hash:
                    raise TrailCorruption(f"chain {frame.chain_id} does not link at seq {frame.seq} in "
                                          f"{path.name}; run `auditor verify`", chain=frame.chain_id,
                                          seq=frame.seq)
                self.heads[frame.chain_id] = ChainHead(frame.chain_id, head.size + 1, frame.record_hash)
                self.ranges.setdefault(frame.chain_id, MerkleRange()).append(frame.record_hash)
                last_cp = latest.get(frame.chain_id)
                if last_cp is not None and last_cp.size == head.size + 1 \
                        and last_cp.head_hash != frame.record_hash:
                    raise TrailCorruption(f"chain {frame.chain_id} differs from its checkpoint at size "
                                          f"{last_cp.size}", chain=frame.chain_id, seq=frame.seq)
            self._segment_index, self._segment_size, self._sync = index, scan.good_end, scan.sync
        now = self.clock()
        for chain_id, cp in latest.items():
            size = self.heads[chain_id].size if chain_id in self.heads else 0
            if cp.size > size:
                raise TrailCorruption(f"chain {chain_id} has {size} durable records but a checkpoint "
                                      f"signs {cp.size}: records were lost", chain=chain_id, seq=size)
            self._last_cp[chain_id] = (cp.size, now)
        if self._segment_index >= 0:
            self._fh = open(self._segment_path(self._segment_index), "ab")  # noqa: SIM115
        self._cp_fh = open(cp_path, "ab")  # noqa: SIM115 -- closed in close()

    # ------------------------------------------------------------ writing

    def head(self, chain_id: str) -> ChainHead:
        return self.heads.get(chain_id) or ChainHead.genesis(chain_id)

    def append(self, records: Iterable[AuditRecord]) -> SealedBatch:
        """Seal records into their chains and buffer them; durable only after :meth:`commit`.

        Returns the sealed records (seq, prev_hash and record_hash set).
        """
        if self.closed:
            raise TrailError("the trail writer is closed")
        out: list[tuple[AuditRecord, int, bytes, bytes]] = []
        heads, ranges, pending = self.heads, self.ranges, self._pending
        for record in records:
            chain_id = record.chain_id
            head = heads.get(chain_id) or ChainHead.genesis(chain_id)
            data, new_head = seal_bytes(head, record)
            out.append((record, head.size, head.head_hash, new_head.head_hash))
            heads[chain_id] = new_head
            rng = ranges.get(chain_id)
            if rng is None:
                rng = ranges[chain_id] = MerkleRange()
            rng.append(new_head.head_hash)
            pending.append(data)
            self._pending_bytes += len(data)
        self._dirty = True
        if self._pending_bytes >= _FLUSH_BYTES:
            self._write_block()
        return SealedBatch(out)

    def _segment_path(self, index: int) -> Path:
        return self.trail_dir / SEGMENTS_DIR / segment_name(index)

    def _roll(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        self._segment_index += 1
        path = self._segment_path(self._segment_index)
        self._sync = create_segment(path, self._segment_index)
        self._fh = open(path, "ab")  # noqa: SIM115 -- closed in _roll()/close()
        self._segment_size = path.stat().st_size

    def _write_block(self) -> None:
        if not self._pending:
            return
        if self._fh is None or self._segment_size + self._pending_bytes > self.segment_bytes:
            self._roll()
        assert self._fh is not None
        block = block_bytes(self._pending, self._sync)
        self._fh.write(block)
        self._segment_size += len(block)
        self._pending.clear()
        self._pending_bytes = 0

    def commit(self) -> None:
        """Make every appended record durable with one fsync, then sign the checkpoints that are due."""
        if not self._dirty:
            return
        self._write_block()
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        self._dirty = False
        self.maybe_checkpoint()

    def maybe_checkpoint(self) -> list[Checkpoint]:
        """Checkpoint the chains whose record or time cadence is due (call from an idle timer too)."""
        now = self.clock()
        due = []
        for chain_id, head in self.heads.items():
            size, at = self._last_cp.setdefault(chain_id, (0, now))
            if head.size > size and (head.size - size >= self.checkpoint_every
                                     or (now - at).total_seconds() >= self.checkpoint_seconds):
                due.append(chain_id)
        return self.checkpoint(due)

    def checkpoint(self, chain_ids: Iterable[str] | None = None) -> list[Checkpoint]:
        """Sign and durably append checkpoints for ``chain_ids`` (default: every chain with news)."""
        if self._dirty:
            self.commit()  # records first: a checkpoint never signs records that are not durable
        now = self.clock()
        ids = list(self.heads) if chain_ids is None else list(chain_ids)
        out = []
        for chain_id in ids:
            head = self.heads[chain_id]
            if self._last_cp.get(chain_id, (0, now))[0] == head.size and chain_ids is None:
                continue
            out.append(make_checkpoint(head, self.ranges[chain_id].root(), now, self.keys.signer))
            self._last_cp[chain_id] = (head.size, now)
        if out:
            assert self._cp_fh is not None
            self._cp_fh.write(b"".join(cp.to_json().encode() + b"\n" for cp in out))
            self._cp_fh.flush()
            os.fsync(self._cp_fh.fileno())
        return out

    def close(self) -> None:
        """Commit, checkpoint every chain with unsigned records, release the directory."""
        if self.closed:
            return
        try:
            self.commit()
            self.checkpoint()
        finally:
            for fh in (self._fh, self._cp_fh):
                if fh is not None:
                    fh.close()
            self._fh = self._cp_fh = None
            self._unlock()
            self.closed = True

    def __enter__(self) -> TrailWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
