"""Avro object container files of events, read with bounds and written for ``check``.

The reader follows the container format of the Avro specification (header: ``Obj\\x01``, a
metadata map, a 16-byte sync marker; then blocks of ``count``, ``size``, data, sync) and bounds
everything a hostile file controls, before it costs time or memory:

- the header is at most :data:`MAX_HEADER_BYTES`; the writer schema must be one the auditor
  allow-lists (the bundled event schema or a configured revision, by fingerprint), so a file cannot
  smuggle in a schema whose records decode from zero bytes;
- a block is at most :data:`MAX_BLOCK_BYTES` as stored and as decompressed (``deflate`` is
  inflated with a limit, so a small block cannot expand to a gigabyte);
- a block cannot declare more records than it has bytes (every event takes bytes), so a 5 KB file
  declaring 2^40 records is refused at once;
- each record is decoded like a Kafka message (``auditor.events.wire``): the same checks, the same
  canonical bytes, so the same event has the same input digest from a file and from Kafka.

A fault in the header makes the whole file unusable (:class:`DecodeError`, exit 2); a fault in a
block is reported once for that block, whose remaining records are skipped, and reading resumes at
the next block.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import fastavro

from auditor.errors import DecodeError, SchemaError
from auditor.events.codec import DecodedLine, event_schema, event_to_mapping
from auditor.events.model import Event

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
MAX_HEADER_BYTES = 1024 * 1024
MAX_BLOCK_BYTES = 64 * 1024 * 1024
CODECS = ("null", "deflate")


class _Input:
    """Reads exactly n bytes, counting; never more than asked."""

    def __init__(self, fh: BinaryIO, source: str) -> None:
        self.fh, self.source, self.pos = fh, source, 0

    def read(self, n: int, what: str) -> bytes:
        data = self.fh.read(n)
        self.pos += len(data)
        if len(data) != n:
            raise EOFError(f"the file ends inside {what}")
        return data

    def long(self, what: str) -> int | None:
        """A zig-zag varint; None at a clean end of file."""
        shift = result = 0
        for i in range(10):
            b = self.fh.read(1)
            self.pos += len(b)
            if not b:
                if i == 0:
                    return None
                raise EOFError(f"the file ends inside {what}")
            result |= (b[0] & 0x7F) << shift
            if not b[0] & 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7
        raise ValueError(f"{what} is not a valid Avro long")


def _header(inp: _Input) -> tuple[dict[str, bytes], bytes]:
    if inp.read(4, "the magic") != MAGIC:
        raise ValueError("not an Avro object container file")
    meta: dict[str, bytes] = {}
    while True:
        count = inp.long("the header")
        if count is None:
            raise EOFError("the file ends inside the header")
        if count == 0:
            break
        if count < 0:  # a negative count is followed by the block's byte size
            count = -count
            inp.long("the header")
        for _ in range(count):
            key = inp.read(_length(inp, "a header key"), "a header key")
            value = inp.read(_length(inp, "a header value"), "a header value")
            meta[key.decode("utf-8", "replace")] = value
            if inp.pos > MAX_HEADER_BYTES:
                raise ValueError(f"the header is larger than {MAX_HEADER_BYTES} bytes")
    return meta, inp.read(SYNC_SIZE, "the sync marker")


def _length(inp: _Input, what: str) -> int:
    n = inp.long(what)
    if n is None:
        raise EOFError(f"the file ends inside {what}")
    if n < 0 or inp.pos + n > MAX_HEADER_BYTES:
        raise ValueError(f"{what} has an impossible length")
    return n


def _writer(meta: dict[str, bytes], allow: Any) -> Any:
    from auditor.events.wire import schema_fingerprint

    try:
        parsed = fastavro.parse_schema(json.loads(meta["avro.schema"]))
    except KeyError:
        raise ValueError("the header has no avro.schema") from None
    except (ValueError, TypeError, RecursionError, fastavro.schema.SchemaParseException) as exc:
        raise ValueError(f"the header's schema does not parse ({exc.__class__.__name__})") from None
    return allow.for_fingerprint(schema_fingerprint(parsed))


def iter_container(fh: BinaryIO, source: str, *, allow: Any = None) -> Iterator[DecodedLine]:
    """Decode a container file of events (record n = line n); see the module docstring."""
    from auditor.events.wire import EventDecoder, SchemaAllowList

    inp = _Input(fh, source)
    try:
        meta, sync = _header(inp)
        codec = meta.get("avro.codec", b"null").decode("ascii", "replace") or "null"
        if codec not in CODECS:
            raise ValueError(f"codec '{codec[:20]}' is not supported (use {' or '.join(CODECS)})")
        allow = allow or SchemaAllowList()
        writer = _writer(meta, allow)
    except SchemaError as exc:
        raise DecodeError(f"the file's writer schema is not an allow-listed event schema ({exc})",
                          reason="unknown_schema", source=source) from None
    except (ValueError, EOFError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not a readable Avro container file: {exc}", reason="undecodable",
                          source=source) from None
    decoder = EventDecoder(allow, max_bytes=MAX_BLOCK_BYTES)
    number = 0
    block = 0
    while True:
        block += 1
        try:
            data, count = _block(inp, codec, sync)
        except (ValueError, EOFError, zlib.error) as exc:
            yield _error(source, number + 1, f"block {block}: {exc}; the rest of the file is skipped")
            return
        if data is None:
            return
        buf = io.BytesIO(data)
        for i in range(count):
            number += 1
            start = buf.tell()
            try:
                fastavro.schemaless_reader(buf, writer.parsed, None)
                if buf.tell() <= start:
                    raise ValueError("a record of no bytes")
            except Exception as exc:  # fastavro raises assorted errors on garbage
                yield _error(source, number, f"block {block}: record {i + 1} of {count} is undecodable "
                                             f"({exc.__class__.__name__}); the block's other "
                                             f"{count - i - 1} records are skipped")
                number += count - i - 1
                break
            body = data[start:buf.tell()]
            try:
                decoded = decoder.decode_body(body, writer)
            except DecodeError as exc:
                exc.source, exc.line = source, number
                yield DecodedLine(source, number, None, exc, body)
                continue
            yield DecodedLine(source, number, decoded.event, None, body, decoded.canonical)
        else:
            if buf.tell() != len(data):
                yield _error(source, number, f"block {block} has {len(data) - buf.tell()} bytes after its "
                                             f"{count} records")


def _block(inp: _Input, codec: str, sync: bytes) -> tuple[bytes | None, int]:
    count = inp.long("a block's record count")
    if count is None:
        return None, 0
    size = inp.long("a block's size")
    if size is None or count < 0 or size < 0:
        raise ValueError("a negative block count or size")
    if size > MAX_BLOCK_BYTES:
        raise ValueError(f"a block of {size} bytes is larger than the {MAX_BLOCK_BYTES}-byte limit")
    data = inp.read(size, "a block")
    if inp.read(SYNC_SIZE, "a sync marker") != sync:
        raise ValueError("the sync marker does not match the header's (corrupt or truncated file)")
    if codec == "deflate":
        inflater = zlib.decompressobj(-15)
        data = inflater.decompress(data, MAX_BLOCK_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError(f"a deflate block expands beyond the {MAX_BLOCK_BYTES}-byte limit")
    if count > len(data):
        raise ValueError(f"the block declares {count} records in {len(data)} bytes")
    return data, count


def _error(source: str, number: int, message: str) -> DecodedLine:
    return DecodedLine(source, number, None, DecodeError(message, reason="undecodable", source=source,
                                                         line=number), b"")


def write_container(out: BinaryIO, events: Iterable[Event], *, codec: str = "deflate") -> int:
    """Write events as an Avro object container file under the bundled schema; return the count."""
    n = 0

    def records() -> Iterator[dict[str, Any]]:
        nonlocal n
        for e in events:
            n += 1
            yield event_to_mapping(e)

    fastavro.writer(out, event_schema(), records(), codec=codec, sync_interval=16 * 1024)
    return n
