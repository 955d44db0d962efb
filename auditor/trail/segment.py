"""Segment files: Avro object container files of AuditRecords, written block by block.

Each commit appends one Avro block (count, size, the records' canonical bytes, sync marker), so
the files stay readable by any Avro tool (``fastavro.reader``) while the writer never re-encodes
what it has already hashed. The header carries ``auditor.segment`` (the segment's index) so a
renamed or reordered segment is named by the verifier.

A crash can leave a torn block at the end of the last segment: :func:`scan_segment` reports the
offset of the last complete block, to which the writer truncates on open.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from auditor.errors import TrailCorruption
from auditor.events.codec import schema_path
from auditor.trail.canonical import SCHEMA_NAME, Frame, enc_long, iter_frames, read_long

MAGIC = b"Obj\x01"
SEGMENTS_DIR = "segments"
_NAME = re.compile(r"^(\d{8})\.avro$")


def segment_name(index: int) -> str:
    return f"{index:08d}.avro"


def list_segments(trail_dir: Path) -> list[tuple[int, Path]]:
    """(index from the file name, path), in file-name order."""
    seg_dir = trail_dir / SEGMENTS_DIR
    if not seg_dir.is_dir():
        return []
    out = []
    for p in sorted(seg_dir.iterdir()):
        m = _NAME.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return out


def _enc_bytes(b: bytes) -> bytes:
    return enc_long(len(b)) + b


def header_bytes(index: int, sync: bytes) -> bytes:
    schema = json.dumps(json.loads(schema_path(SCHEMA_NAME).read_text()), separators=(",", ":"))
    meta = {"avro.schema": schema.encode(), "avro.codec": b"null",
            "auditor.segment": str(index).encode(), "auditor.format": b"auditor-trail/1"}
    parts = [MAGIC, enc_long(len(meta))]
    for k, v in meta.items():
        parts += [_enc_bytes(k.encode()), _enc_bytes(v)]
    parts += [b"\x00", sync]
    return b"".join(parts)


def block_bytes(records: list[bytes], sync: bytes) -> bytes:
    data = b"".join(records)
    return b"".join((enc_long(len(records)), enc_long(len(data)), data, sync))


@dataclass
class Block:
    offset: int
    count: int
    data_start: int
    data_end: int


@dataclass
class SegmentScan:
    """A segment read into memory: its header, its complete blocks, and where a torn tail starts."""

    path: Path
    name_index: int
    buf: bytes
    meta_index: int | None = None
    sync: bytes = b""
    header_end: int = 0
    blocks: list[Block] = field(default_factory=list)
    good_end: int = 0
    torn: bool = False

    @property
    def records(self) -> int:
        return sum(b.count for b in self.blocks)

    def frames(self) -> Iterator[tuple[Block, Frame]]:
        for block in self.blocks:
            end = block.data_start
            for frame in iter_frames(self.buf, block.count, block.data_start):
                end = frame.end
                yield block, frame
            if end != block.data_end:
                raise TrailCorruption(f"{self.path.name}: block at byte {block.offset} does not frame "
                                      "into whole records")


def _parse_header(buf: bytes) -> tuple[dict[str, bytes], bytes, int]:
    if buf[:4] != MAGIC:
        raise ValueError("not an Avro container file")
    pos, meta = 4, {}
    while True:
        count, pos = read_long(buf, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = read_long(buf, pos)
        for _ in range(count):
            n, pos = read_long(buf, pos)
            key = buf[pos:pos + n].decode()
            pos += n
            n, pos = read_long(buf, pos)
            meta[key] = buf[pos:pos + n]
            pos += n
    sync = buf[pos:pos + 16]
    if len(sync) != 16:
        raise IndexError
    return meta, sync, pos + 16


def scan_segment(path: Path, name_index: int) -> SegmentScan:
    buf = path.read_bytes()
    scan = SegmentScan(path, name_index, buf)
    try:
        meta, scan.sync, scan.header_end = _parse_header(buf)
    except (IndexError, UnicodeDecodeError):
        scan.torn = True  # header itself incomplete: the file holds no records
        return scan
    except ValueError as exc:
        raise TrailCorruption(f"{path.name}: {exc}") from exc
    try:
        scan.meta_index = int(meta.get("auditor.segment", b"-1"))
    except ValueError:
        scan.meta_index = None
    pos = scan.good_end = scan.header_end
    while pos < len(buf):
        try:
            count, p = read_long(buf, pos)
            size, p = read_long(buf, p)
        except IndexError:
            scan.torn = True
            break
        end = p + size
        if count <= 0 or size < 0 or end + 16 > len(buf) or buf[end:end + 16] != scan.sync:
            scan.torn = True
            break
        scan.blocks.append(Block(pos, count, p, end))
        pos = scan.good_end = end + 16
    return scan


def peek_segment(path: Path, name_index: int) -> SegmentScan:
    """Only the header (segment index), without reading the records."""
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    scan = SegmentScan(path, name_index, b"")
    try:
        meta, scan.sync, scan.header_end = _parse_header(head)
        scan.meta_index = int(meta.get("auditor.segment", b"-1"))
    except (IndexError, UnicodeDecodeError, ValueError):
        scan.meta_index = None
    return scan


def create_segment(path: Path, index: int) -> bytes:
    """Create a segment with its header, durable (file and directory fsynced); return its sync."""
    sync = os.urandom(16)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(header_bytes(index, sync))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return sync


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
