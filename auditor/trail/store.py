"""The file store: segment files plus a checkpoint log, append-only, with group commit.

Layout of a trail directory::

    trail.json           format and checkpoint cadence (written once, atomically; not trusted)
    segments/00000000.avro, 00000001.avro, ...   records of every chain, interleaved
    checkpoints.jsonl    one StoredCheckpoint per line: signed note, compact range,
                         consistency proof from the chain's previous checkpoint, position
    cosignatures.jsonl   witness cosignatures obtained later, one line per checkpoint
    .lock                held (flock) by the one writer

Durability order: ``append`` seals records into their chains and buffers them; ``commit`` writes
the buffer as one Avro block and fsyncs once; only then are checkpoints signed and appended (and
fsynced) for chains whose cadence is due.

Reopening costs only the records after the last checkpoints. Each checkpoint line stores the
position of the block holding the last record it signs (``at``) and the earliest position a
reopening writer must read from (``resume``: the oldest of every chain's ``at``, or of its first
block if it was never checkpointed). On open, each chain's last checkpoint is verified with the
writer's own key and its compact range checked against the signed root; the segments are read
from ``resume`` only; the record at each checkpoint's last seq must be found there and hash to
the checkpoint's head, and the next record must point to it (else: records lost or altered, and
the writer refuses to continue); a torn tail (a crash mid-write) is truncated to the last
complete block.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Callable, Iterable

from auditor.errors import ConfigError, TrailCorruption, TrailError
from auditor.trail.canonical import Frame, iter_frames
from auditor.trail.chain import ChainHead, SealedBatch, seal_bytes
from auditor.trail.checkpoint import Checkpoint, SignedCheckpoint, StoredCheckpoint, make_checkpoint
from auditor.trail.encoded import chain_encoded, check_encoded
from auditor.trail.keys import KeyRing
from auditor.trail.merkle import MerkleRange, RangeNodes, consistency_proof
from auditor.trail.note import Note
from auditor.trail.record import AuditRecord
from auditor.trail.segment import (
    SEGMENTS_DIR,
    block_parts,
    create_segment,
    fsync_dir,
    list_segments,
    scan_segment,
    segment_name,
)

TRAIL_JSON, CHECKPOINTS, COSIGNATURES, LOCK = "trail.json", "checkpoints.jsonl", "cosignatures.jsonl", ".lock"
TRAIL_FORMAT = "auditor-trail/2"
_FLUSH_BYTES = 4 << 20
Position = tuple[int, int]  # (segment index, byte offset)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def read_trail_meta(trail_dir: Path) -> dict:
    try:
        meta = json.loads((trail_dir / TRAIL_JSON).read_text())
    except FileNotFoundError:
        raise TrailError(f"{trail_dir} is not a trail (no {TRAIL_JSON})") from None
    except ValueError as exc:
        raise TrailCorruption(f"{trail_dir / TRAIL_JSON} is not valid JSON") from exc
    if not isinstance(meta, dict) or meta.get("format") != TRAIL_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise TrailError(f"{trail_dir} has trail format {fmt!r}; this auditor reads {TRAIL_FORMAT}")
    return dict(meta)


def read_lines(path: Path) -> tuple[list[str], bool]:
    """Complete lines of a JSON-lines log, and whether a torn (unterminated) line followed."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], False
    complete, _, rest = data.rpartition(b"\n")
    lines = [ln.decode("utf-8", "replace") for ln in complete.split(b"\n") if ln.strip()] if complete else []
    return lines, bool(rest.strip())


def read_checkpoint_lines(trail_dir: Path) -> tuple[list[str], bool]:
    return read_lines(trail_dir / CHECKPOINTS)


class _ChainState:
    """Per chain: the last checkpoint (size, compact range, when) and the leaves since."""

    __slots__ = ("cp_size", "cp_head", "cp_roots", "cp_time", "cp_at", "since", "first_at", "last_at", "head_seen")

    def __init__(self, first_at: Position | None = None) -> None:
        self.cp_size = 0
        self.cp_head = b""
        self.cp_roots: tuple[bytes, ...] = ()
        self.cp_time: datetime | None = None
        self.cp_at: Position | None = None
        self.since: list[bytes] = []
        self.first_at = first_at   # the block of the chain's first record
        self.last_at = first_at    # the block of the chain's latest record
        self.head_seen = False     # on open: the record the last checkpoint ends with was found

    @property
    def resume_at(self) -> Position:
        return self.cp_at if self.cp_at is not None else (self.first_at or (0, 0))


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
        self._state: dict[str, _ChainState] = {}
        self._last_cp: dict[str, tuple[int, datetime]] = {}
        self._pending: list[bytes] = []  # records' bytes, or chunks of several (append_encoded)
        self._pending_count = 0
        self._pending_chains: set[str] = set()
        self._pending_bytes = 0
        self._segment_index = -1
        self._segment_size = 0
        self._sync = b""
        self._fh: IO[bytes] | None = None
        self._cp_fh: IO[bytes] | None = None
        self._lock_fh: IO[bytes] | None = None
        self._dirty = False
        self.closed = False
        self.reopen_records = 0  # records read on open (the cost of reopening)

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

    def _latest_checkpoints(self) -> tuple[dict[str, tuple[StoredCheckpoint, SignedCheckpoint]], Position | None]:
        """Each chain's last checkpoint, verified with our own key; and the resume position."""
        lines, torn = read_checkpoint_lines(self.trail_dir)
        if torn:  # a crash while appending a checkpoint line: drop the partial line
            keep = sum(len(ln.encode()) + 1 for ln in lines)
            os.truncate(self.trail_dir / CHECKPOINTS, keep)
        stored: dict[str, StoredCheckpoint] = {}
        sizes: dict[str, int] = {}
        for line in lines:
            entry = StoredCheckpoint.from_json(line)
            cp = Checkpoint.parse(Note.parse(entry.note).text)
            if cp.size >= sizes.get(cp.origin, -1):  # keyed by origin; the chain id is known once verified
                sizes[cp.origin], stored[cp.origin] = cp.size, entry
        resume = StoredCheckpoint.from_json(lines[-1]).resume if lines else None
        latest: dict[str, tuple[StoredCheckpoint, SignedCheckpoint]] = {}
        for origin, entry in stored.items():
            try:
                signed = entry.open(self.keys.verifier)
            except TrailCorruption as exc:
                raise TrailCorruption(f"the last checkpoint of {origin} does not verify with this trail's key: "
                                      f"{exc}; run `auditor verify`") from exc
            if entry.at is None or len(entry.range) != bin(signed.size).count("1"):
                raise TrailCorruption(f"the last checkpoint of {signed.chain_id} has no position or compact range")
            latest[signed.chain_id] = (entry, signed)
        return latest, (resume if latest else None)

    def _recover(self) -> None:
        latest, resume = self._latest_checkpoints()
        now = self.clock()
        for chain, (entry, signed) in latest.items():
            st = self._state[chain] = _ChainState(entry.at)
            st.cp_size, st.cp_head, st.cp_roots = signed.size, signed.checkpoint.head, entry.range
            st.cp_time, st.cp_at = signed.checkpoint.time, entry.at
            self.heads[chain] = signed.head
            self.ranges[chain] = MerkleRange.restore(signed.size, entry.range, signed.root)
            self._last_cp[chain] = (signed.size, now)
        segments = list_segments(self.trail_dir)
        start_seg, start_off = resume if resume is not None else (-1, 0)
        current = True
        for pos, (index, path) in enumerate(segments):
            last = pos == len(segments) - 1
            if index < start_seg:
                continue  # wholly before the resume position: covered by checkpoints, not read
            scan = scan_segment(path, index, start_off if index == start_seg else None)
            if scan.torn and not last:
                raise TrailCorruption(f"segment {path.name} is damaged before the end of the trail; "
                                      "run `auditor verify` on it")
            for block, frame in scan.frames():
                self._replay_frame(frame, (index, scan.base + block.offset), path.name)
            if scan.torn:
                os.truncate(path, scan.good_end)  # the records of a torn block were never committed
            self._segment_index, self._segment_size, self._sync = index, scan.good_end, scan.sync
            current = scan.current
        for chain, (_, signed) in latest.items():
            if not self._state[chain].head_seen:
                raise TrailCorruption(f"chain {chain}: the record its last checkpoint signs (seq {signed.size - 1}) "
                                      "is not where the checkpoint was taken: records were lost or moved; "
                                      "run `auditor verify`", chain=chain, seq=signed.size - 1)
        if self._segment_index >= 0 and current:
            # a segment whose header names an earlier schema revision is left as it is: the next
            # block starts a new segment, so every segment reads with the schema its header names
            self._fh = open(self._segment_path(self._segment_index), "ab")  # noqa: SIM115
        self._cp_fh = open(self.trail_dir / CHECKPOINTS, "ab")  # noqa: SIM115 -- closed in close()

    def _replay_frame(self, frame: Frame, at: Position, segment: str) -> None:
        """Re-derive a chain's head and range from one durable record read on open."""
        self.reopen_records += 1
        chain = frame.chain_id
        head = self.heads.get(chain)
        st = self._state.get(chain)
        if head is None or st is None:
            head = ChainHead.genesis(chain)
            st = self._state[chain] = _ChainState(at)
        if frame.seq < st.cp_size:
            # a record the chain's checkpoint covers (its own last one, or read because another
            # chain resumes earlier): the checkpoint's last record must hash to the signed head
            if frame.seq == st.cp_size - 1:
                if frame.record_hash != st.cp_head:
                    raise TrailCorruption(f"chain {chain} record seq {frame.seq} in {segment} differs from the head "
                                          f"hash its checkpoint of size {st.cp_size} signs; run `auditor verify`",
                                          chain=chain, seq=frame.seq, expected=st.cp_head.hex(),
                                          actual=frame.record_hash.hex())
                st.head_seen = True
            return
        if st.cp_size and not st.head_seen:
            raise TrailCorruption(f"chain {chain} continues at seq {frame.seq} in {segment} before the record its "
                                  f"checkpoint of size {st.cp_size} ends with; run `auditor verify`",
                                  chain=chain, seq=frame.seq)
        if frame.seq != head.size or frame.prev_hash != head.head_hash:
            what = (f"does not link to its checkpoint of size {st.cp_size}" if frame.seq == st.cp_size > 0
                    else "does not link")
            raise TrailCorruption(f"chain {chain} {what} at seq {frame.seq} in {segment}; run `auditor verify`",
                                  chain=chain, seq=frame.seq)
        self.heads[chain] = ChainHead(chain, head.size + 1, frame.record_hash)
        rng = self.ranges.get(chain)
        if rng is None:
            rng = self.ranges[chain] = MerkleRange()
        rng.append(frame.record_hash)
        st.since.append(frame.record_hash)
        st.last_at = at

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
        heads, ranges, states, pending = self.heads, self.ranges, self._state, self._pending
        pending_chains = self._pending_chains
        for record in records:
            chain_id = record.chain_id
            head = heads.get(chain_id) or ChainHead.genesis(chain_id)
            data, new_head = seal_bytes(head, record)
            out.append((record, head.size, head.head_hash, new_head.head_hash))
            heads[chain_id] = new_head
            rng = ranges.get(chain_id)
            if rng is None:
                rng = ranges[chain_id] = MerkleRange()
                states[chain_id] = _ChainState()
            rng.append(new_head.head_hash)
            states[chain_id].since.append(new_head.head_hash)
            pending_chains.add(chain_id)
            pending.append(data)
            self._pending_bytes += len(data)
        self._pending_count += len(out)
        self._dirty = True
        if self._pending_bytes >= _FLUSH_BYTES:
            self._write_block()
        return SealedBatch(out)

    def append_encoded(self, encoded: Iterable[bytes]) -> None:
        """Append records sealed elsewhere, byte for byte (the audit topic's values): each must be one
        whole record that hashes to its record_hash and links to its chain's head. Not re-sealed, so
        a record keeps the bytes its writer gave it, whatever version of the encoder that was.

        One compiled call checks and chains the whole batch (:func:`auditor.trail.encoded.chain_encoded`).
        A refused record raises TrailCorruption; the records before it are appended, as one by one."""
        if self.closed:
            raise TrailError("the trail writer is closed")
        records = encoded if isinstance(encoded, list) else list(encoded)
        batch = chain_encoded(records, self.heads, self.ranges)
        for a in batch.chains:
            chain_id = a.chain_id
            self.heads[chain_id] = ChainHead(chain_id, a.size, a.head_hash)
            rng = self.ranges.get(chain_id)
            if rng is None:
                rng = self.ranges[chain_id] = MerkleRange()
                self._state[chain_id] = _ChainState()
            rng.reset(a.range_size, a.roots)
            self._state[chain_id].since.extend(a.leaves)
            self._pending_chains.add(chain_id)
        if batch.accepted:
            self._pending.append(batch.data)
            self._pending_count += batch.accepted
            self._pending_bytes += len(batch.data)
            self._dirty = True
        if batch.bad is not None:
            data = records[batch.bad]
            (f,) = iter_frames(data, 1)  # raises if it does not frame
            check_encoded(data, self.head(f.chain_id))  # raises: it does not hash or link
            raise AssertionError(f"the compiled step refused record {batch.bad} that the reference accepts")
        if self._pending_bytes >= _FLUSH_BYTES:
            self._write_block()

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
        at = (self._segment_index, self._segment_size)
        for chain_id in self._pending_chains:
            st = self._state[chain_id]
            st.last_at = at
            if st.first_at is None:
                st.first_at = at
        self._pending_chains.clear()
        for part in block_parts(self._pending, self._sync, self._pending_count):
            self._fh.write(part)
            self._segment_size += len(part)
        self._pending.clear()
        self._pending_count = 0
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

    def maybe_checkpoint(self) -> list[StoredCheckpoint]:
        """Checkpoint the chains whose record or time cadence is due (call from an idle timer too)."""
        now = self.clock()
        due = []
        for chain_id, head in self.heads.items():
            size, at = self._last_cp.setdefault(chain_id, (0, now))
            if head.size > size and (head.size - size >= self.checkpoint_every
                                     or (now - at).total_seconds() >= self.checkpoint_seconds):
                due.append(chain_id)
        return self.checkpoint(due)

    def checkpoint(self, chain_ids: Iterable[str] | None = None) -> list[StoredCheckpoint]:
        """Sign and durably append checkpoints for ``chain_ids`` (default: every chain with news)."""
        if self._dirty:
            self.commit()  # records first: a checkpoint never signs records that are not durable
        now = self.clock()
        ids = list(self.heads) if chain_ids is None else list(chain_ids)
        made: list[tuple[str, StoredCheckpoint]] = []
        for chain_id in ids:
            head = self.heads[chain_id]
            st = self._state[chain_id]
            if st.cp_size == head.size and chain_ids is None:
                continue
            made.append((chain_id, self._sign(chain_id, head, st, now, st.last_at or (0, 0))))
        if not made:
            return []
        for chain_id, _ in made:
            st = self._state[chain_id]
            head = self.heads[chain_id]
            st.cp_size, st.cp_head, st.cp_roots = head.size, head.head_hash, self.ranges[chain_id].subtree_roots
            st.cp_time, st.cp_at = now, st.last_at
            st.since = []
            self._last_cp[chain_id] = (head.size, now)
        resume = min(st.resume_at for st in self._state.values())
        out = [StoredCheckpoint(e.note, e.range, e.prev_size, e.proof, e.at, resume) for _, e in made]
        assert self._cp_fh is not None
        self._cp_fh.write(b"".join(e.to_json().encode() + b"\n" for e in out))
        self._cp_fh.flush()
        os.fsync(self._cp_fh.fileno())
        return out

    def _sign(self, chain_id: str, head: ChainHead, st: _ChainState, now: datetime, at: Position) -> StoredCheckpoint:
        rng = self.ranges[chain_id]
        note = make_checkpoint(head, rng, now, self.keys.signer)
        proof = consistency_proof(st.cp_size, head.size, RangeNodes(st.cp_size, st.cp_roots, st.since))
        return StoredCheckpoint(note.to_bytes(), rng.subtree_roots, st.cp_size, tuple(proof), at)

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
