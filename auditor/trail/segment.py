"""Segment files: Avro object container files of AuditRecords, written block by block.

Each commit appends one Avro block (count, size, the records' canonical bytes, sync marker), so
the files stay readable by any Avro tool (``fastavro.reader``) while the writer never re-encodes
what it has already hashed. The header carries ``auditor.segment`` (the segment's index) so a
renamed or reordered segment is named by the verifier.

A crash can leave a torn block at the end of the last segment: :func:`scan_segment` reports the
offset of the last complete block, to which the writer truncates on open. A segment is created
with its whole header in one atomic rename, so a header that does not parse is damage, never a
crash: it is reported with the segment's name, and every length read from a segment is bounded
by the bytes that are there (a flipped bit cannot make a reader loop or run off the end).
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

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


@functools.lru_cache(maxsize=1)
def _schema_bytes() -> bytes:
    return json.dumps(json.loads(schema_path(SCHEMA_NAME).read_text()), separators=(",", ":")).encode()


#: earlier revisions of the audit record schema a segment header may name (records append fields)
EARLIER_SCHEMAS = ("audit_record.1.avsc", "audit_record.2.avsc")


@functools.lru_cache(maxsize=1)
def _readable_schemas() -> frozenset[bytes]:
    return frozenset({_schema_bytes(), *(
        json.dumps(json.loads(schema_path(n).read_text()), separators=(",", ":")).encode()
        for n in EARLIER_SCHEMAS)})


def header_bytes(index: int, sync: bytes) -> bytes:
    meta = {"avro.schema": _schema_bytes(), "avro.codec": b"null",
            "auditor.segment": str(index).encode(), "auditor.format": b"auditor-trail/1"}
    parts = [MAGIC, enc_long(len(meta))]
    for k, v in meta.items():
        parts += [_enc_bytes(k.encode()), _enc_bytes(v)]
    parts += [b"\x00", sync]
    return b"".join(parts)


def block_bytes(records: list[bytes], sync: bytes, count: int | None = None) -> bytes:
    """One Avro block of ``records`` (each one record's bytes; or, given ``count``, chunks that
    hold ``count`` records in all)."""
    return b"".join(block_parts(records, sync, count))


def block_parts(records: list[bytes], sync: bytes, count: int | None = None) -> tuple[bytes, bytes, bytes]:
    """:func:`block_bytes` as (count and size, records, sync marker), for a writer that writes them
    one after the other instead of copying the records once more (a single chunk is not copied)."""
    data = b"".join(records)
    return enc_long(len(records) if count is None else count) + enc_long(len(data)), data, sync


@dataclass
class Block:
    offset: int
    count: int
    data_start: int
    data_end: int


@dataclass
class SegmentScan:
    """A segment read into memory from ``base``: its header, complete blocks, and where a torn tail starts.

    ``buf`` holds the file's bytes from ``base`` on; block and frame positions are relative to
    ``buf``; ``good_end`` is the absolute offset just after the last complete block.
    """

    path: Path
    name_index: int
    buf: bytes
    meta_index: int | None = None
    sync: bytes = b""
    header_end: int = 0
    blocks: list[Block] = field(default_factory=list)
    good_end: int = 0
    torn: bool = False
    base: int = 0
    #: the header names the current schema revision (a writer appends only to such a segment)
    current: bool = True

    @property
    def records(self) -> int:
        return sum(b.count for b in self.blocks)

    def frames(self) -> Iterator[tuple[Block, Frame]]:
        for block in self.blocks:
            end = block.data_start
            try:
                for frame in iter_frames(self.buf, block.count, block.data_start):
                    end = frame.end
                    yield block, frame
            except TrailCorruption as exc:
                raise TrailCorruption(f"segment {self.path.name}: block at byte {self.base + block.offset}: "
                                      f"{exc}") from exc
            if end != block.data_end:
                raise TrailCorruption(f"segment {self.path.name}: block at byte {self.base + block.offset} does "
                                      "not frame into whole records")


_MAX_META_ENTRIES = 64


def _parse_header(buf: bytes) -> tuple[dict[str, bytes], bytes, int]:
    """Metadata, sync marker and header length; ValueError (with the byte offset) when damaged."""
    if buf[:4] != MAGIC:
        raise ValueError("not an Avro container file (bad magic)")
    pos, meta = 4, dict[str, bytes]()
    try:
        while True:
            at = pos
            count, pos = read_long(buf, pos)
            if count == 0:
                break
            if count < 0:
                count = -count
                _, pos = read_long(buf, pos)
            if len(meta) + count > _MAX_META_ENTRIES:
                raise ValueError(f"header metadata count {count} at byte {at} is implausible")
            for _ in range(count):
                at = pos
                n, pos = read_long(buf, pos)
                if n < 0 or pos + n > len(buf):
                    raise ValueError(f"header key length {n} at byte {at} is out of bounds")
                key = buf[pos:pos + n].decode()
                pos += n
                at = pos
                n, pos = read_long(buf, pos)
                if n < 0 or pos + n > len(buf):
                    raise ValueError(f"header value length {n} at byte {at} is out of bounds")
                meta[key] = buf[pos:pos + n]
                pos += n
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"header unreadable near byte {pos}") from exc
    sync = buf[pos:pos + 16]
    if len(sync) != 16:
        raise ValueError("header ends before its sync marker")
    if meta.get("avro.schema") not in _readable_schemas():
        raise ValueError("its avro.schema is not the audit record schema")
    return meta, sync, pos + 16


def _read_header(path: Path, fh: Any) -> tuple[dict[str, bytes], bytes, int]:
    head = fh.read(_HEADER_MAX)
    try:
        return _parse_header(head)
    except ValueError as exc:
        raise TrailCorruption(f"segment {path.name}: {exc}: the segment header is damaged") from exc


_HEADER_MAX = 1 << 16


def scan_segment(path: Path, name_index: int, start: int | None = None) -> SegmentScan:
    """Read a segment's header and its blocks from ``start`` (default: just after the header).

    A damaged header raises TrailCorruption naming the segment; an incomplete or damaged block
    ends the scan with ``torn`` set and ``good_end`` at the last complete block.
    """
    with path.open("rb") as fh:
        meta, sync, header_end = _read_header(path, fh)
        base = header_end if start is None or start < header_end else start
        fh.seek(base)
        buf = fh.read()
        size = base + len(buf)
    if base > size:
        raise TrailCorruption(f"segment {path.name} is {size} bytes; position {base} is beyond its end")
    scan = SegmentScan(path, name_index, buf, sync=sync, header_end=header_end, base=base,
                       current=meta.get("avro.schema") == _schema_bytes())
    try:
        scan.meta_index = int(meta.get("auditor.segment", b"-1"))
    except ValueError:
        scan.meta_index = None
    pos = 0
    scan.good_end = base
    n = len(buf)
    while pos < n:
        try:
            count, p = read_long(buf, pos)
            size_, p = read_long(buf, p)
        except IndexError:
            scan.torn = True
            break
        end = p + size_
        if count <= 0 or size_ < 0 or end + 16 > n or buf[end:end + 16] != sync:
            scan.torn = True
            break
        scan.blocks.append(Block(pos, count, p, end))
        pos = end + 16
        scan.good_end = base + pos
    return scan


def peek_segment(path: Path, name_index: int) -> SegmentScan:
    """Only the header (segment index), without reading the records; raises if it is damaged."""
    with path.open("rb") as fh:
        meta, sync, header_end = _read_header(path, fh)
    scan = SegmentScan(path, name_index, b"", sync=sync, header_end=header_end)
    try:
        scan.meta_index = int(meta.get("auditor.segment", b"-1"))
    except ValueError:
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
