"""The compiled hot path: batch decoding of events and batch sealing of audit records.

The work is done by ``auditor._native`` (Rust, built by ``pip install -e .`` through maturin from
``native/``); this module is its Python API. Both halves are driven by the ``.avsc`` files, read
once at construction, so a schema change needs no rebuild.

:class:`NativeEventDecoder` replaces :class:`auditor.events.wire.EventDecoder`. One call per batch
of Kafka message values: the framing, the allow-list, a strict bounded decode of the Avro body
(every valid encoding accepted, including blocked arrays and maps as Apache Avro Java's
BlockingBinaryEncoder writes them; hostile encodings refused without re-encoding to compare), the
canonical encoding (minimal varints, one block per array or map, map entries sorted by key) and
its SHA-256 digest, the input digest of the audit record. What is refused gets the same reason
labels as the Python decoder. :meth:`NativeEventDecoder.decode_facts` returns the facts as tuples
(no per-event Python objects beyond them); :meth:`NativeEventDecoder.decode_events` builds the
domain :class:`~auditor.events.model.Event` with the same checks as the Python path.

:class:`NativeSealer` encodes a batch of :class:`~auditor.trail.record.AuditRecord` into their
canonical bytes and seals them into their chains (``record_hash = SHA-256(0x00 || bytes)``, each
linked to the previous hash), byte for byte what :func:`auditor.trail.chain.seal_bytes` makes.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import fastavro

from auditor import _native
from auditor.errors import DecodeError, SchemaError
from auditor.events.codec import (
    MAX_MICROS,
    MAX_SUBJECT_ID,
    MIN_MICROS,
    event_from_datum,
    event_schema,
    event_to_mapping,
    schema_path,
)
from auditor.events.model import Event
from auditor.events.wire import DEFAULT_MAX_BYTES, SchemaAllowList
from auditor.trail.chain import ChainHead
from auditor.trail.record import MAX_TEXT

Decoded = _native.Decoded
Refused = _native.Refused
#: whether the compiled module has :class:`FactMemo` and seals its hits (an install built from an
#: older native/ has not: it runs without the shadow)
FACT_MEMO_BUILT = hasattr(_native, "FactMemo") and hasattr(_native, "HitBatch")
#: whether the shadow builds the violation messages of its hits (a module built before it does not:
#: it is taught no violation, and seals as before)
SHADOW_VIOLATIONS = FACT_MEMO_BUILT and hasattr(_native, "json_ascii")
#: the compiled LazyRecord (None: a module built before it; the processor then uses its Python form)
NativeLazyRecord: Any = getattr(_native, "LazyRecord", None)


class EventDecoded(NamedTuple):
    """One event decoded by the native path: the domain Event, its canonical bytes, their SHA-256."""

    event: Event
    canonical: bytes
    digest: bytes


class SealedBytes(NamedTuple):
    """One sealed record: its canonical bytes (record_hash last), its place and its hash."""

    data: bytes
    seq: int
    prev_hash: bytes
    record_hash: bytes


def _error(refused: Any) -> DecodeError:
    cls = SchemaError if refused.reason == "unknown_schema" else DecodeError
    return cls(refused.message, reason=refused.reason)


def _schema_text(parsed: Any) -> str:
    """JSON of a fastavro-parsed schema (fastavro's bookkeeping keys dropped)."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if not k.startswith("__")}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return json.dumps(clean(parsed))


class NativeEventDecoder:
    """Decodes batches of Kafka message values; the writer schemas are those of ``allow``."""

    def __init__(self, allow: SchemaAllowList | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 facts: Sequence[str] | None = None) -> None:
        self.allow = allow or SchemaAllowList()
        self.max_bytes = max_bytes
        reader = schema_path("privacy_event.avsc").read_text()
        writers = [(fp, reader if fp == self.allow.reader_fp else _schema_text(ws.parsed))
                   for fp, ws in self.allow.by_fp.items()]
        self._codec = _native.EventCodec(
            reader, writers, {sid: ws.fingerprint for sid, ws in self.allow.by_id.items()}, max_bytes,
            list(facts) if facts is not None else None)

    @property
    def fact_names(self) -> list[str]:
        """Names of the items of each ``Decoded.facts`` tuple (dotted field paths)."""
        return list(self._codec.fact_names)

    def _resolve_ids(self, values: list[bytes | None], results: list[Any], datum: bool) -> list[Any]:
        """Retry messages refused only for an unknown Confluent id once the registry knows it."""
        pending = [i for i, r in enumerate(results) if isinstance(r, Refused) and r.schema_id is not None]
        if not pending or self.allow.registry_url is None:
            return results
        for sid in sorted({results[i].schema_id for i in pending}):
            try:
                ws = self.allow.for_id(sid)  # TransientError (registry down) propagates: retry the batch
            except SchemaError:
                continue
            self._codec.add_confluent_id(sid, ws.fingerprint)
        again = self._codec.decode_batch([values[i] for i in pending], datum=datum)
        for i, r in zip(pending, again, strict=True):
            results[i] = r
        return results

    def decode_facts(self, values: Iterable[bytes | None]) -> list[Decoded | Refused]:
        """Per value: ``Decoded(canonical, digest, facts)`` with ``facts`` a tuple in
        :attr:`fact_names` order (arrays as tuples, maps as sorted ``(key, value)`` pairs), or
        ``Refused(reason, message, schema_id)``. Only Avro-level checks: see :meth:`decode_events`."""
        values = list(values)
        return self._resolve_ids(values, self._codec.decode_batch(values), False)

    def decode_events(self, values: Iterable[bytes | None]) -> list[EventDecoded | DecodeError]:
        """Per value: the Event with its canonical bytes and digest, or the DecodeError (a
        :class:`SchemaError` for unknown schemas) saying why it was refused."""
        values = list(values)
        out: list[EventDecoded | DecodeError] = []
        for r in self._resolve_ids(values, self._codec.decode_batch(values, datum=True), True):
            if isinstance(r, Refused):
                out.append(_error(r))
                continue
            try:
                out.append(EventDecoded(event_from_datum(r.facts), r.canonical, r.digest))
            except DecodeError as exc:
                out.append(exc)
        return out

    def decode(self, value: bytes | None) -> EventDecoded:
        """One value (the interface of EventDecoder.decode); raises DecodeError."""
        result = self.decode_events([value])[0]
        if isinstance(result, DecodeError):
            raise result
        return result


class FactMemo:
    """A shadow of the decision memo in compiled code (``native/src/shadow.rs``): events whose
    decision the memo holds are decoded, decided and their record bodies built in one call per
    batch (:meth:`decide`), without a Python object per event but the hit tuple. It only knows
    what Python teaches it (:meth:`learn`); the caller drops it (:meth:`reset`) whenever the memo
    it mirrors is dropped."""

    def __init__(self, decoder: NativeEventDecoder) -> None:
        self.decoder = decoder
        self._memo = _native.FactMemo(decoder._codec, MIN_MICROS, MAX_MICROS, MAX_TEXT, MAX_SUBJECT_ID)

    def set_key(self, key: bytes | None) -> None:
        """The key of the pseudonyms (HMAC-SHA256, hex of its first 16 bytes); None: decide nothing."""
        self._memo.set_key(key)

    def reset(self) -> None:
        self._memo.reset()

    def __len__(self) -> int:
        return len(self._memo)

    def take_hits(self) -> list[int]:
        """Events decided per owner (the numbers given to :meth:`learn`) since the last call."""
        return list(self._memo.take_hits())

    def learn(self, value: bytes, facts: Sequence[str], minor_age: int, owner: int, handle: Any,
              decision: bytes, violation: tuple[list[str], list[str], tuple[Any, ...]] | None = None) -> bool:
        """The memo decides the event ``value`` as ``decision`` (encoded as the record's field):
        its plan's memo key reads ``facts`` (``key_of.facts``). A violation also gives its message
        cut at the per-event values, whole and truncated (``[text, slot name, text, ..., text]``,
        the slots of ``_MESSAGE_SLOTS`` in auditor/stream/processor.py), and its events' violation
        labels. False: not mirrored here (a violation, by a module built before SHADOW_VIOLATIONS)."""
        if violation is None:
            return bool(self._memo.learn(self.decoder._codec, value, list(facts), minor_age, owner, handle, decision))
        if not SHADOW_VIOLATIONS:
            return False
        return bool(self._memo.learn(self.decoder._codec, value, list(facts), minor_age, owner, handle, decision,
                                     violation))

    def decide(self, sealer: NativeSealer, layout: int, values: list[bytes | None], messages: list[Any],
               batch: tuple[Any, ...]) -> tuple[list[int], list[Decoded | Refused], bytes, Any]:
        """Decode the batch and decide what the memo holds, keeping the hits (their record bodies,
        built as ``layout`` says from the batch values ``batch``) in compiled code:
        ``(misses, results, teach, hits)``. ``misses``: the positions of the events not decided
        here, ascending; ``results``: what :meth:`NativeEventDecoder.decode_facts` gives each of
        them; ``teach``: per miss, whether teaching it (:meth:`learn`) could let the shadow decide
        its key (0: it knows the key, or cannot mirror the event or its plan); ``hits``: the
        decided events, for :meth:`seal`."""
        misses, results, teach, hits = self._memo.decide_batch(self.decoder._codec, sealer._sealer, layout, values,
                                                               messages, batch)
        if misses:
            results = self.decoder._resolve_ids([values[i] for i in misses], results, False)
        return misses, results, teach, hits

    @staticmethod
    def seal(hits: Any, sealer: NativeSealer, layout: int | None, batch: tuple[Any, ...], misses: list[int],
             records: list[Any], working: Mapping[str, ChainHead], heads: Mapping[str, ChainHead], audit_budget: int,
             audit_topic: str, audit_partition: Any, outgoing: type, lazy: Any, violations_topic: str | None = None,
             violations_budget: int = 0, key_id: str | None = None) -> tuple[Any, ...]:
        """Seal the batch in input order: the hits of :meth:`decide` from their bodies, and at the
        positions ``misses`` (ascending; a hit's position among them replaces the hit) the
        ``records`` as :meth:`NativeSealer.seal_batch` seals them, each after its chain's head
        (``working``, else ``heads``, else its genesis). Neither dict is changed.

        Returns ``(seals, over, outgoing, sealed, labels, when, cuts, new_heads)``: per miss its
        ``(data, seq, prev_hash, record_hash)`` or the exception that kept it from being sealed
        (not placed); ``(position, record size)`` of each hit whose record and key are over
        ``audit_budget`` bytes; per hit placed, in order, its audit message (an ``outgoing``
        instance: ``audit_topic``, ``audit_partition(source partition)``, the chain id's bytes, the
        record, no headers), its ``(lazy(chain_id, data), seq, prev_hash, record_hash)``, its
        learnt handle and its occurred_at in seconds; per miss the number of hits placed before
        it; and per chain sealed into, its new ``(size, head_hash)``. Then ``(out_cuts,
        violations, violation_cuts)``: a hit of a violation has its violation message (an
        ``outgoing``: ``violations_topic``, no partition, the event id's bytes, the message as
        ``BatchProcessor._fact_violation`` makes it, truncated when over ``violations_budget``
        with its key; ``key_id``: the pseudonym key id as the message's JSON text) right after its
        audit message, and its labels in ``violations``; per miss, the lengths of ``outgoing`` and
        ``violations`` before it."""
        if not SHADOW_VIOLATIONS:  # no violation among the hits: their outgoing and violations as before
            got = tuple(hits.seal(sealer._sealer, layout, batch, misses, records, working, heads, audit_budget,
                                  audit_topic, audit_partition, outgoing, lazy))
            return (*got[:8], list(got[6]), [], [0] * len(got[6]))
        return tuple(hits.seal(sealer._sealer, layout, batch, misses, records, working, heads, audit_budget,
                               audit_topic, audit_partition, outgoing, lazy, violations_topic, violations_budget,
                               key_id))


class NativeSealer:
    """Encodes and seals audit records, batch by batch, from ``audit_record.avsc``."""

    def __init__(self, schema_text: str | None = None) -> None:
        self._sealer = _native.RecordSealer(schema_text or schema_path("audit_record.avsc").read_text())

    def encode_body(self, record: Any) -> bytes:
        """The record's fields from record_type to rejection (as :func:`auditor.trail.canonical.encode_body`)."""
        return bytes(self._sealer.encode_body(record))

    def add_layout(self, spec: Mapping[str, Any]) -> int:
        """Register how a record is built from an item ``(facts, chain_id, ...)`` instead of a
        record object (:meth:`auditor.stream.factpath.FactPath.layout` gives the spec); returns the
        handle :meth:`seal_batch` takes. Raises ValueError when the spec does not name every field
        of the schema, or names one it does not have."""
        return int(self._sealer.add_layout(dict(spec)))

    def encode_field(self, name: str, value: Any) -> bytes:
        """``value`` encoded as the record's field ``name`` (union branch included): the bytes a
        ``("raw", k)`` layout source copies (a decision, encoded once per decision template)."""
        return bytes(self._sealer.encode_field(name, value))

    def seal_batch(self, records: Iterable[Any], heads: Mapping[str, ChainHead], layout: int | None = None,
                   batch: tuple[Any, ...] = (), tuples: bool = False) -> tuple[list[SealedBytes], dict[str, ChainHead]]:
        """Seal ``records`` in order, each after its chain's head (from ``heads``, else the
        chain's genesis). Returns the sealed bytes per record and the chains' new heads (only the
        chains the batch touched). ``heads`` itself is not changed.

        With ``layout`` (from :meth:`add_layout`), a record may also be given as a plain tuple
        ``(facts, chain_id, ...)``: its bytes are built as the layout says, ``batch`` holding the
        layout's batch values. A record object (a NamedTuple) is encoded as always.

        With ``tuples``, each sealed record is the plain tuple ``(data, seq, prev_hash, record_hash)``
        the compiled code returns, not wrapped as a :class:`SealedBytes` (the same values, by position)."""
        work: dict[str, tuple[int, bytes]] = {c: (h.size, h.head_hash) for c, h in heads.items()}
        before = dict(work)
        sealed: list[Any] = self._sealer.seal_batch(records, work, layout, batch)
        if not tuples:
            new = tuple.__new__
            sealed = [new(SealedBytes, t) for t in sealed]
        return sealed, {c: ChainHead(c, s, h) for c, (s, h) in work.items() if before.get(c) != (s, h)}


def canonical_event(event: Event) -> tuple[bytes, bytes]:
    """The canonical bytes of an Event from a file (JSON or Avro container) and their SHA-256:
    the same bytes and digest :class:`NativeEventDecoder` gives the same event from Kafka, whatever
    the order of its attributes or the blocking of its arrays and maps."""
    mapping = event_to_mapping(event)
    mapping["attributes"] = dict(sorted(mapping["attributes"].items(), key=lambda kv: kv[0].encode()))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, event_schema(), mapping)
    data = buf.getvalue()
    return data, hashlib.sha256(data).digest()


def genesis_hash(chain_id: str) -> bytes:
    return bytes(_native.genesis_hash(chain_id))
