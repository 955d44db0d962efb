"""How a batch is decoded and sealed: the compiled hot path, or the Python reference.

:class:`~auditor.stream.processor.BatchProcessor` decodes a batch of message values in one
call (:meth:`HotPath.decode`) and seals the batch's records in one call (:meth:`HotPath.seal`).
Two implementations give the same bytes:

* :class:`NativePath` (``native: true``, the default): one
  :meth:`~auditor.native.NativeEventDecoder.decode_events` call per batch (strict bounded Avro
  decoding without re-encoding, canonical bytes and their digest computed in Rust) and one
  :meth:`~auditor.native.NativeSealer.seal_batch` call (record encoding and chain hashing);
* :class:`PythonPath` (``native: false``): :meth:`auditor.events.wire.EventDecoder.decode` and
  :func:`auditor.trail.chain.seal_bytes`, message by message.

Both keep one message's failure to that message: an item is either its result or the exception
that replaced it, and the processor dead-letters it. A batch call that raises is retried item by
item, so a fault of the compiled code on one input costs that input only. A
:class:`~auditor.errors.TransientError` (a schema registry down) propagates: the batch is retried.

Where the two differ on purpose (the compiled decoder accepts every valid Avro encoding): arrays
and maps written in blocks with byte sizes (Apache Avro Java's BlockingBinaryEncoder) are decoded
by the native path and refused as ``hostile_encoding`` by the reference, which compares a
re-encoding; and the canonical bytes of a map sort its keys, so an event whose ``attributes``
came in another order has the digest its file form has (the reference digests the order received).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from auditor.errors import TransientError
from auditor.events.wire import EventDecoder
from auditor.native import Decoded, EventDecoded, NativeEventDecoder, NativeSealer, Refused, SealedBytes
from auditor.trail.chain import ChainHead, seal_bytes
from auditor.trail.record import AuditRecord

#: per message: the decoded event, or the exception that refused or failed it
DecodeResult = EventDecoded | Exception
#: per record: its sealed bytes and place, or the exception that failed it (the record is not placed)
SealResult = SealedBytes | Exception


class HotPath(Protocol):
    def decode(self, values: Sequence[bytes | None]) -> list[DecodeResult]: ...
    def seal(self, records: Sequence[AuditRecord], heads: Mapping[str, ChainHead]
             ) -> tuple[list[SealResult], dict[str, ChainHead]]: ...


class Seal(Protocol):
    def __call__(self, head: ChainHead, record: AuditRecord, /) -> tuple[SealedBytes, ChainHead]: ...


class PythonPath:
    """The reference: one message, one record at a time."""

    native = False

    def __init__(self, decoder: EventDecoder) -> None:
        self.decoder = decoder

    def decode(self, values: Sequence[bytes | None]) -> list[DecodeResult]:
        out: list[DecodeResult] = []
        sha256 = hashlib.sha256
        for value in values:
            try:
                decoded = self.decoder.decode(value)
                out.append(EventDecoded(decoded.event, decoded.canonical, sha256(decoded.canonical).digest()))
            except TransientError:
                raise
            except Exception as exc:  # noqa: BLE001 - the processor dead-letters it
                out.append(exc)
        return out

    def seal(self, records: Sequence[AuditRecord], heads: Mapping[str, ChainHead]
             ) -> tuple[list[SealResult], dict[str, ChainHead]]:
        return seal_each(records, heads, _seal_one)


class NativePath:
    """The compiled hot path: one call per batch to decode, one to seal."""

    native = True

    def __init__(self, decoder: NativeEventDecoder, sealer: NativeSealer | None = None) -> None:
        self.decoder = decoder
        self.sealer = sealer or NativeSealer()

    def decode(self, values: Sequence[bytes | None]) -> list[DecodeResult]:
        try:
            return list(self.decoder.decode_events(values))
        except TransientError:
            raise
        except Exception:  # noqa: BLE001 - find the message that fails, alone
            return [self._decode_one(v) for v in values]

    def decode_facts(self, values: Sequence[bytes | None]) -> list[Decoded | Refused | Exception]:
        """The batch as facts tuples (no Event): see :mod:`auditor.stream.factpath`."""
        try:
            return list(self.decoder.decode_facts(values))
        except TransientError:
            raise
        except Exception as exc:  # noqa: BLE001 - the full path decodes them again, one by one if need be
            # without its traceback: its frame (holding exc) links back to the batch, a reference cycle
            return [exc.with_traceback(None)] * len(values)

    def _decode_one(self, value: bytes | None) -> DecodeResult:
        try:
            return self.decoder.decode_events([value])[0]
        except TransientError:
            raise
        except Exception as exc:  # noqa: BLE001 - the processor dead-letters it
            return exc

    def seal(self, records: Sequence[AuditRecord | tuple[Any, ...]], heads: Mapping[str, ChainHead],
             layout: int | None = None, batch: tuple[Any, ...] = (), tuples: bool = False
             ) -> tuple[list[SealResult], dict[str, ChainHead]]:
        """As :meth:`PythonPath.seal`; with ``layout`` (a handle of the sealer's) a record may also
        be an item ``(facts, chain_id, ...)`` the sealer builds the record from (stream/factpath.py).
        With ``tuples``, a sealed record may be a plain ``(data, seq, prev_hash, record_hash)``
        tuple rather than a :class:`SealedBytes` (read them by position)."""
        try:
            sealed, new = self.sealer.seal_batch(records, heads, layout, batch, tuples)
        except TransientError:
            raise
        except Exception:  # noqa: BLE001 - find the record that fails, alone
            def one(head: ChainHead, record: Any) -> tuple[SealedBytes, ChainHead]:
                (sealed,), new = self.sealer.seal_batch([record], {head.chain_id: head}, layout, batch)
                return sealed, new[head.chain_id]
            return seal_each(records, heads, one)
        return list(sealed), {**heads, **new}


def _seal_one(head: ChainHead, record: AuditRecord) -> tuple[SealedBytes, ChainHead]:
    data, new = seal_bytes(head, record)
    return SealedBytes(data, head.size, head.head_hash, new.head_hash), new


def seal_each(records: Sequence[Any], heads: Mapping[str, ChainHead], seal_one: Seal
              ) -> tuple[list[SealResult], dict[str, ChainHead]]:
    """Seal record by record; a record that fails is not placed (the next one takes its seq)."""
    work = dict(heads)
    out: list[SealResult] = []
    for record in records:
        chain = record[1] if type(record) is tuple else record.chain_id  # an item (facts, chain_id, ...)
        head = work.get(chain) or ChainHead.genesis(chain)
        try:
            sealed, work[chain] = seal_one(head, record)
        except TransientError:
            raise
        except Exception as exc:  # noqa: BLE001 - the processor dead-letters it
            out.append(exc)
            continue
        out.append(sealed)
    return out, work


def hot_path(decoder: EventDecoder | NativeEventDecoder, sealer: NativeSealer | None = None) -> HotPath:
    """The path a decoder belongs to: a :class:`NativeEventDecoder` makes the compiled one."""
    if isinstance(decoder, NativeEventDecoder):
        return NativePath(decoder, sealer)
    return PythonPath(decoder)
