"""Where a trail is read from: the I/O half of verify, replay, prove and evidence.

The verifier, replay and proofs are written against :class:`TrailSource`: checkpoints (signed
notes with their stored companions) and *chunks* of encoded records, in storage order. The file
store is :class:`FileSource`; the Kafka audit and checkpoint topics are
:class:`auditor.stream.topictrail.KafkaSource`. A source reports what only it can see (a
damaged segment, segments out of order) as :class:`Issue` values in the stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Protocol

from auditor.errors import TrailCorruption
from auditor.trail.canonical import Frame
from auditor.trail.checkpoint import StoredCheckpoint
from auditor.trail.note import Note, NoteError
from auditor.trail.segment import SegmentScan, list_segments, peek_segment, scan_segment
from auditor.trail.store import CHECKPOINTS, COSIGNATURES, read_lines, read_trail_meta


@dataclass(frozen=True)
class Issue:
    """One finding: what kind, where (chain and seq), and for hashes the expected and actual."""

    kind: str
    message: str
    chain: str | None = None
    seq: int | None = None
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.chain:
            where = f"[{self.chain}" + (f" seq {self.seq}]" if self.seq is not None else "]")
        detail = f" (expected {self.expected}, actual {self.actual})" if self.expected or self.actual else ""
        return f"{self.kind}: {where} {self.message}{detail}".replace(":  ", ": ")


class Chunk(NamedTuple):
    """Encoded records in one buffer: a label for messages, the bytes, and the records' frames."""

    where: str
    buf: bytes
    frames: Iterable[Frame]


class Located(NamedTuple):
    """A stored checkpoint and where it was read (for messages), or why it could not be read."""

    where: str
    entry: StoredCheckpoint | None
    problem: str | None = None


class TrailSource(Protocol):
    label: str

    def checkpoints(self) -> Iterator[Located]: ...
    def chunks(self) -> Iterator[Chunk | Issue]: ...
    def size_hint(self) -> int: ...


def merge_cosignatures(entries: list[Located], cosigned: Iterable[bytes]) -> list[Located]:
    """Add witness signature lines kept apart (``cosignatures.jsonl``, later checkpoint-topic
    messages) to the stored notes with the same text."""
    extra: dict[str, list[Note]] = {}
    for data in cosigned:
        try:
            note = Note.parse(data)
        except NoteError:
            continue  # a damaged cosignature line vouches for nothing; the checkpoint stands alone
        extra.setdefault(note.text, []).append(note)
    if not extra:
        return entries
    out = []
    for loc in entries:
        if loc.entry is not None:
            try:
                note = Note.parse(loc.entry.note)
            except NoteError:
                out.append(loc)
                continue
            for more in extra.get(note.text, ()):
                note = note.with_signatures(more.signatures)
            entry = StoredCheckpoint(note.to_bytes(), loc.entry.range, loc.entry.prev_size, loc.entry.proof,
                                     loc.entry.at, loc.entry.resume)
            loc = Located(loc.where, entry)
        out.append(loc)
    return out


class FileSource:
    """A trail directory: segments streamed one at a time, checkpoints from ``checkpoints.jsonl``."""

    def __init__(self, trail_dir: Path) -> None:
        self.trail_dir = Path(trail_dir)
        read_trail_meta(self.trail_dir)
        self.label = str(trail_dir)
        self.notes: list[str] = []

    def size_hint(self) -> int:
        return sum(p.stat().st_size for _, p in list_segments(self.trail_dir))

    def checkpoints(self) -> Iterator[Located]:
        lines, torn = read_lines(self.trail_dir / CHECKPOINTS)
        if torn:
            self.notes.append("the checkpoint log ends in a partial line (crash while writing)")
        entries = []
        for n, line in enumerate(lines, start=1):
            try:
                entries.append(Located(f"checkpoint line {n}", StoredCheckpoint.from_json(line)))
            except TrailCorruption as exc:
                entries.append(Located(f"checkpoint line {n}", None, str(exc)))
        yield from merge_cosignatures(entries, self.cosigned_notes())

    def cosigned_notes(self) -> list[bytes]:
        out = []
        for line in read_lines(self.trail_dir / COSIGNATURES)[0]:
            try:
                out.append(str(json.loads(line)["note"]).encode())
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def chunks(self) -> Iterator[Chunk | Issue]:
        heads: list[SegmentScan] = []
        for index, path in list_segments(self.trail_dir):
            try:
                heads.append(peek_segment(path, index))
            except TrailCorruption as exc:
                yield Issue("damaged", str(exc))
        ordered, problems = segment_order(heads)
        yield from problems
        for pos, head in enumerate(ordered):
            try:
                scan = scan_segment(head.path, head.name_index)  # one segment in memory at a time
            except (TrailCorruption, OSError) as exc:
                yield Issue("damaged", str(exc))
                continue
            if scan.torn:
                where = ("at the end of the trail (a crash mid-write; opening the trail for writing repairs it)"
                         if pos == len(ordered) - 1 else "in the middle of the trail")
                yield Issue("damaged", f"segment {scan.path.name} has an incomplete block at byte "
                                       f"{scan.good_end} {where}")
            yield Chunk(f"segment {scan.path.name}", scan.buf, (f for _, f in scan.frames()))


def segment_order(scans: list[SegmentScan]) -> tuple[list[SegmentScan], list[Issue]]:
    """Segments in their header order, and what is wrong with that order."""
    problems = []
    for s in scans:
        if s.meta_index is not None and s.meta_index != s.name_index:
            problems.append(Issue("reordered", f"segment file {s.path.name} holds segment {s.meta_index}: "
                                               "segments were renamed or reordered"))
    indices = [s.meta_index for s in scans if s.meta_index is not None]
    if len(indices) == len(scans):
        for missing in sorted(set(range(max(indices, default=-1) + 1)) - set(indices)):
            problems.append(Issue("reordered", f"segment {missing} is missing"))
        return sorted(scans, key=lambda s: s.meta_index or 0), problems
    return scans, problems


def as_source(trail: TrailSource | Path | str) -> TrailSource:
    """A directory path as a :class:`FileSource`; a source as itself."""
    return FileSource(Path(trail)) if isinstance(trail, (str, Path)) else trail
