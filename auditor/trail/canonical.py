"""Canonical bytes of an AuditRecord: the Avro binary (schemaless) encoding.

The encoding follows ``schemas/audit_record.avsc`` exactly, so any Avro library reads it; it is
written by a hand-specialised encoder (fastavro's generic writer is ~4x slower for this schema
and its union resolution validates every nested record). A test pins the bytes to fastavro's.

Layout, in field order::

    chain_id  seq  prev_hash[32]  body_len  <body: record_type .. legal_request_reference>  record_hash[32]

``record_hash = SHA-256(0x00 || every byte before it)``. Because record_hash is the last field,
the hashed bytes are the record's own encoding minus its final 32 bytes. ``body_len`` lets the
verifier frame records and check links with a few varint reads, without decoding the body.

Schema revisions append fields to the body, each with a default (revision 2: ``ledger``;
revision 3: ``actor_organisation``, ``legal_request_reference``): a body that ends where an
earlier revision ended was written by it, and the later fields read as their defaults
(:data:`REVISION_ENDS`, :func:`record_from_bytes`).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from itertools import pairwise
from typing import Any, Iterator

import fastavro

from auditor.errors import TrailCorruption
from auditor.events.codec import load_schema
from auditor.events.model import (
    ActorOrganisation,
    ActorType,
    EventKind,
    Identifiability,
    LegalRequestType,
    Safeguard,
)
from auditor.memo import BytesMemo
from auditor.policy.decision import Verdict
from auditor.trail.record import (
    AuditRecord,
    CorrectedRecord,
    DecisionFacts,
    Facts,
    LedgerFacts,
    LedgerRead,
    RecipientFacts,
    RecordType,
    Rejection,
    SourceRef,
    ViolationFacts,
)

SCHEMA_NAME = "audit_record.avsc"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SMALL = [bytes([(n << 1) & 0x7F | (0x80 if n >= 64 else 0)]) + (b"\x01" if n >= 64 else b"")
          for n in range(128)]
_NULL, _SOME = b"\x00", b"\x02"
_FALSE, _TRUE = b"\x00", b"\x01"
_RECORD_TYPE = {RecordType.DECISION: b"\x00", RecordType.REJECTION: b"\x02", RecordType.CORRECTION: b"\x04"}
#: encodings of short strings (a vocabulary: kinds, purposes, rule ids, roles), bounded by bytes;
#: a string over about 200 bytes (a reason, a cut value) is encoded each time
_STRINGS: BytesMemo[str, bytes] = BytesMemo(4 * 1024 * 1024, 512)
_STR_CACHE = _STRINGS.data
_ENUM_CACHE: dict[Enum, bytes] = {}


def record_schema() -> Any:
    return load_schema(SCHEMA_NAME)


def enc_long(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL[n]
    z = (n << 1) ^ (n >> 63)
    if z < 1 << 7:  # -64..-1: one byte (two would be a non-minimal varint)
        return bytes((z,))
    if z < 1 << 14:
        return bytes((z & 0x7F | 0x80, z >> 7))
    if z >> 49 and not z >> 56:  # 8 bytes: every timestamp in microseconds since 1970
        return bytes((z & 0x7F | 0x80, z >> 7 & 0x7F | 0x80, z >> 14 & 0x7F | 0x80, z >> 21 & 0x7F | 0x80,
                      z >> 28 & 0x7F | 0x80, z >> 35 & 0x7F | 0x80, z >> 42 & 0x7F | 0x80, z >> 49))
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def enc_str(s: str) -> bytes:
    """Encode a string from a small vocabulary (kinds, purposes, rule ids), memoised."""
    cached = _STR_CACHE.get(s)
    if cached is not None:
        return cached
    raw = s.encode()
    out = enc_long(len(raw)) + raw
    _STRINGS.put(s, out, 2 * len(raw) + 100)
    return out


def enc_id(s: str) -> bytes:
    """Encode a high-cardinality string (event ids, pseudonyms); not memoised."""
    raw = s.encode()
    return enc_long(len(raw)) + raw


def _enum(e: Enum) -> bytes:
    cached = _ENUM_CACHE.get(e)
    if cached is None:
        cached = _ENUM_CACHE[e] = enc_str(e.value)
    return cached


def _opt_str(s: str | None) -> bytes:
    return _NULL if s is None else _SOME + enc_str(s)


def _opt_id(s: str | None) -> bytes:
    return _NULL if s is None else _SOME + enc_id(s)


def _opt_long(n: int | None) -> bytes:
    return _NULL if n is None else _SOME + enc_long(n)


def _opt_bool(b: bool | None) -> bytes:
    return _NULL if b is None else (b"\x02\x01" if b else b"\x02\x00")


def micros(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _str_array(items: tuple[str, ...]) -> bytes:
    if not items:
        return b"\x00"
    return b"".join([enc_long(len(items)), *map(enc_str, items), b"\x00"])


def _source(s: SourceRef) -> bytes:
    return b"".join((_opt_str(s.topic), _opt_long(s.partition), _opt_long(s.offset),
                     _opt_id(s.file), _opt_long(s.line)))


def _facts_tail(f: Facts) -> bytes:
    """subject_age .. safeguard: all low-cardinality, so the encoding is memoised by value."""
    r = f.recipient
    return b"".join((
        _opt_long(f.subject_age), _opt_bool(f.subject_is_minor), _opt_str(f.subject_region),
        _str_array(f.data_categories), enc_str(f.purpose),
        _NULL if r is None else b"".join((_SOME, enc_str(r.type), enc_str(r.id), _opt_str(r.country),
                                          _opt_bool(r.on_our_behalf))),
        _enum(f.identifiability), _opt_str(f.legal_basis), _enum(f.legal_request_type),
        _TRUE if f.consent_marketing else _FALSE, _TRUE if f.consent_third_party_sharing else _FALSE,
        _TRUE if f.consent_guardian else _FALSE, _TRUE if f.consent_marketing_opt_out else _FALSE,
        _TRUE if f.cross_border else _FALSE, _opt_str(f.destination_country), _enum(f.safeguard),
    ))


#: encodings of the facts that repeat (pack and source; the context of the processing), by bytes
_TAILS: BytesMemo[tuple[Any, ...], bytes] = BytesMemo(8 * 1024 * 1024, 16 * 1024)
_HEADS: BytesMemo[tuple[Any, ...], bytes] = BytesMemo(1024 * 1024, 4 * 1024)
_TAIL_CACHE, _HEAD_CACHE = _TAILS.data, _HEADS.data


def _facts(f: Facts) -> bytes:
    head_key = (f.policy_id, f.source_system, f.actor_type)
    head = _HEAD_CACHE.get(head_key)
    if head is None:
        head = enc_str(f.policy_id) + enc_str(f.source_system) + _enum(f.actor_type)
        _HEADS.put(head_key, head, 3 * len(head) + 200)  # the key's strings, the tuple, the bytes
    tail_key = (f.subject_age, f.subject_is_minor, f.subject_region, f.data_categories, f.purpose,
                f.recipient, f.identifiability, f.legal_basis, f.legal_request_type, f.consent_marketing,
                f.consent_third_party_sharing, f.consent_guardian, f.consent_marketing_opt_out,
                f.cross_border, f.destination_country, f.safeguard)
    tail = _TAIL_CACHE.get(tail_key)
    if tail is None:
        tail = _facts_tail(f)
        _TAILS.put(tail_key, tail, 3 * len(tail) + 600)
    parts = [_SOME, _enum(f.kind), enc_long(micros(f.occurred_at)), head, enc_id(f.actor_pseudonym),
             _opt_str(f.actor_role), enc_id(f.subject_pseudonym), tail]
    if f.attributes:
        parts.append(enc_long(len(f.attributes)))
        for k, v in f.attributes:
            parts.append(enc_str(k))
            parts.append(enc_id(v))
    parts.append(b"\x00")
    return b"".join(parts)


#: encoded decisions by value: most records repeat one of a few decisions (bounded by bytes)
_DECISIONS: BytesMemo[DecisionFacts, bytes] = BytesMemo(4 * 1024 * 1024, 16 * 1024)
_CUT = "…[cut: "


def _decision(d: DecisionFacts) -> bytes:
    hit = _DECISIONS.data.get(d)
    if hit is None:
        hit = _encode_decision(d)
        # a reason that quotes a cut value (with its digest) is one of a kind: not worth keeping
        if not any(_CUT in v.reason for v in d.violations):
            _DECISIONS.put(d, hit, 1024 + 3 * len(hit) + 200 * len(d.violations))  # key, tuples, bytes
    return hit


def _encode_decision(d: DecisionFacts) -> bytes:
    parts = [_SOME, _enum(d.verdict), enc_str(d.pack_id), enc_str(d.pack_hash)]
    if d.violations:
        parts.append(enc_long(len(d.violations)))
        for v in d.violations:
            parts += [enc_str(v.rule_id), enc_str(v.clause), enc_str(v.kind), enc_str(v.severity),
                      enc_str(v.reason)]
    parts += [b"\x00", _opt_str(d.permitted_by), _opt_str(d.permitted_clause)]
    return b"".join(parts)


def _long_array(items: tuple[int, ...]) -> bytes:
    if not items:
        return b"\x00"
    return b"".join([enc_long(len(items)), *map(enc_long, items), b"\x00"])


def _ledger(lf: LedgerFacts) -> bytes:
    parts = [_SOME, enc_long(lf.partition), enc_long(lf.through_offset)]
    if lf.reads:
        parts.append(enc_long(len(lf.reads)))
        for r in lf.reads:
            v = r.value
            value = _NULL if v is None else (b"\x02" + (_TRUE if v else _FALSE) if isinstance(v, bool)
                                            else b"\x04" + enc_id(v))
            parts += [enc_str(r.question), _opt_str(r.purpose), _opt_str(r.recipient_type),
                      _opt_id(r.recipient_id), value, _long_array(r.fact_offsets)]
    parts.append(b"\x00")
    c = lf.corrects
    parts.append(_NULL if c is None else b"".join(
        (_SOME, enc_id(c.chain_id), enc_long(c.seq), _long_array(c.cause_offsets))))
    return b"".join(parts)


def encode_body(r: AuditRecord) -> bytes:
    """The fields from record_type to legal_request_reference: everything the chain position does
    not change."""
    return b"".join((
        _RECORD_TYPE[r.record_type], _source(r.source), _opt_id(r.event_id), r.input_digest,
        enc_long(micros(r.processed_at)), enc_str(r.auditor_version), enc_str(r.instance_id),
        enc_str(r.pseudonym_key_id),
        _NULL if r.facts is None else _facts(r.facts),
        _NULL if r.decision is None else _decision(r.decision),
        _NULL if r.rejection is None else b"".join(
            (_SOME, enc_str(r.rejection.reason), enc_id(r.rejection.message))),
        _NULL if r.ledger is None else _ledger(r.ledger),
        _NULL if r.actor_organisation is None else _SOME + _enum(r.actor_organisation),
        _opt_id(r.legal_request_reference),
    ))


def encode_head(chain_id: str, seq: int, prev_hash: bytes, body_len: int) -> bytes:
    return b"".join((enc_str(chain_id), enc_long(seq), prev_hash, enc_long(body_len)))


def record_to_bytes(r: AuditRecord) -> bytes:
    """Avro schemaless encoding of a sealed record (the Kafka audit-topic value)."""
    if not r.sealed:
        raise ValueError("only sealed records have canonical bytes; seal() it first")
    body = encode_body(r)
    return encode_head(r.chain_id, r.seq, r.prev_hash, len(body)) + body + r.record_hash


# ---------------------------------------------------------------- framing without decoding

def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a zig-zag varint at ``pos``; IndexError when it runs past the buffer or 10 bytes."""
    b = buf[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        if shift > 63:
            raise IndexError("varint longer than 10 bytes")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


class Frame:
    """A record located in a buffer: its chain, seq, links, and byte span; body not decoded."""

    __slots__ = ("chain_id", "seq", "prev_hash", "record_hash", "start", "body_start", "end")

    def __init__(self, chain_id: str, seq: int, prev_hash: bytes, record_hash: bytes, start: int,
                 body_start: int, end: int) -> None:
        self.chain_id, self.seq, self.prev_hash, self.record_hash = chain_id, seq, prev_hash, record_hash
        self.start, self.body_start, self.end = start, body_start, end


def iter_frames(buf: bytes, count: int, pos: int = 0) -> Iterator[Frame]:
    """Frame ``count`` consecutive encoded records starting at ``pos``.

    Every length is checked before it is used, so damaged bytes end in TrailCorruption, never
    in a read past the buffer or a position that moves backwards.
    """
    size = len(buf)
    try:
        for _ in range(count):
            start = pos
            n, pos = read_long(buf, pos)
            if n < 0 or pos + n > size:
                raise IndexError
            chain_id = buf[pos:pos + n].decode()
            pos += n
            seq, pos = read_long(buf, pos)
            prev = buf[pos:pos + 32]
            pos += 32
            body_len, pos = read_long(buf, pos)
            if body_len < 0 or seq < 0 or pos + body_len + 32 > size:
                raise IndexError
            body_start = pos
            pos += body_len
            record_hash = buf[pos:pos + 32]
            pos += 32
            yield Frame(chain_id, seq, prev, record_hash, start, body_start, pos)
    except (IndexError, UnicodeDecodeError) as exc:
        raise TrailCorruption("a record cannot be framed (block damaged)") from exc


# ---------------------------------------------------------------- decoding

def _dt(us: Any) -> datetime:
    if isinstance(us, datetime):
        return us if us.tzinfo else us.replace(tzinfo=UTC)
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def record_from_mapping(m: dict[str, Any]) -> AuditRecord:
    f = m.get("facts")
    d = m.get("decision")
    j = m.get("rejection")
    facts = None
    if f is not None:
        rc = f.get("recipient")
        facts = Facts(
            kind=EventKind(f["kind"]), occurred_at=_dt(f["occurred_at"]), policy_id=f["policy_id"],
            source_system=f["source_system"], actor_type=ActorType(f["actor_type"]),
            actor_pseudonym=f["actor_pseudonym"], actor_role=f["actor_role"],
            subject_pseudonym=f["subject_pseudonym"], subject_age=f["subject_age"],
            subject_is_minor=f["subject_is_minor"], subject_region=f["subject_region"],
            data_categories=tuple(f["data_categories"]), purpose=f["purpose"],
            recipient=None if rc is None else RecipientFacts(rc["type"], rc["id"], rc["country"],
                                                             rc["on_our_behalf"]),
            identifiability=Identifiability(f["identifiability"]), legal_basis=f["legal_basis"],
            legal_request_type=LegalRequestType(f["legal_request_type"]),
            consent_marketing=f["consent_marketing"],
            consent_third_party_sharing=f["consent_third_party_sharing"],
            consent_guardian=f["consent_guardian"],
            consent_marketing_opt_out=f["consent_marketing_opt_out"],
            cross_border=f["cross_border"], destination_country=f["destination_country"],
            safeguard=Safeguard(f["safeguard"]),
            attributes=tuple(f["attributes"].items()),
        )
    decision = None
    if d is not None:
        decision = DecisionFacts(
            verdict=Verdict(d["verdict"]), pack_id=d["pack_id"], pack_hash=d["pack_hash"],
            violations=tuple(ViolationFacts(v["rule_id"], v["clause"], v["kind"], v["severity"],
                                            v["reason"]) for v in d["violations"]),
            permitted_by=d["permitted_by"], permitted_clause=d["permitted_clause"])
    s = m["source"]
    lg = m.get("ledger")
    ledger = None
    if lg is not None:
        c = lg["corrects"]
        ledger = LedgerFacts(
            lg["partition"], lg["through_offset"],
            tuple(LedgerRead(r["question"], r["purpose"], r["recipient_type"], r["recipient_id"], r["value"],
                             tuple(r["fact_offsets"])) for r in lg["reads"]),
            None if c is None else CorrectedRecord(c["chain_id"], c["seq"], tuple(c["cause_offsets"])))
    return AuditRecord(
        chain_id=m["chain_id"], record_type=RecordType(m["record_type"]),
        source=SourceRef(s["topic"], s["partition"], s["offset"], s["file"], s["line"]),
        event_id=m["event_id"], input_digest=m["input_digest"], processed_at=_dt(m["processed_at"]),
        auditor_version=m["auditor_version"], instance_id=m["instance_id"],
        pseudonym_key_id=m["pseudonym_key_id"], facts=facts, decision=decision,
        rejection=None if j is None else Rejection(j["reason"], j["message"]),
        seq=m["seq"], prev_hash=m["prev_hash"], record_hash=m["record_hash"], ledger=ledger,
        actor_organisation=None if m.get("actor_organisation") is None
        else ActorOrganisation(m["actor_organisation"]),
        legal_request_reference=m.get("legal_request_reference"),
    )


#: the last body field of each earlier revision (1, 2); the fields after each were appended with
#: defaults, so a body ends at one of these or after the current revision's last field
REVISION_ENDS = ("rejection", "ledger")


@lru_cache(maxsize=1)
def _body_schemas() -> tuple[Any, tuple[tuple[Any, dict[str, Any]], ...]]:
    """(the body fields of revision 1, then per later revision: its appended fields and their
    defaults), parsed.

    Schema evolution without a writer schema on the wire: a record's body is framed by
    ``body_len``, so a body that ends where revision N ended was written by revision N, and the
    fields appended since take their defaults; otherwise they are read from the bytes that remain."""
    import json

    from auditor.events.codec import schema_path

    raw = json.loads(schema_path(SCHEMA_NAME).read_text())
    named: dict[str, Any] = {}
    fastavro.parse_schema(raw, named_schemas=named)
    names = [f["name"] for f in raw["fields"]]
    cuts = [names.index(n) + 1 for n in REVISION_ENDS] + [names.index("record_hash")]
    core = fastavro.parse_schema({"type": "record", "name": "io.auditor.trail.v1.BodyCore",
                                  "fields": raw["fields"][4:cuts[0]]}, named_schemas=dict(named))
    later = []
    for rev, (lo, hi) in enumerate(pairwise(cuts), start=2):
        appended = raw["fields"][lo:hi]
        ext = fastavro.parse_schema({"type": "record", "name": f"io.auditor.trail.v1.BodyRevision{rev}",
                                     "fields": appended}, named_schemas=dict(named))
        later.append((ext, {f["name"]: f["default"] for f in appended}))
    return core, tuple(later)


def record_from_bytes(data: bytes) -> AuditRecord:
    """Decode one record's Avro schemaless bytes (raises TrailCorruption if undecodable).

    Records of every schema revision decode: the fields each later revision appended are read
    when the body has bytes left, else they take their defaults."""
    data = bytes(data)
    frame = next(iter_frames(data, 1))
    if frame.end != len(data):
        raise TrailCorruption("undecodable audit record (bytes after its record_hash)")
    core, later = _body_schemas()
    body = io.BytesIO(data[frame.body_start:frame.end - 32])
    size = frame.end - 32 - frame.body_start
    try:
        m = fastavro.schemaless_reader(body, core, None)
        assert isinstance(m, dict)
        for ext, defaults in later:
            if body.tell() < size:
                more = fastavro.schemaless_reader(body, ext, None)
                assert isinstance(more, dict)
                m.update(more)
            else:
                m.update(defaults)
        if body.tell() != size:
            raise ValueError("the body does not decode to its length")
        m.update(chain_id=frame.chain_id, seq=frame.seq, prev_hash=frame.prev_hash, record_hash=frame.record_hash)
        return record_from_mapping(m)
    except Exception as exc:  # fastavro raises assorted errors on bad input
        raise TrailCorruption(f"undecodable audit record ({exc.__class__.__name__})") from exc
