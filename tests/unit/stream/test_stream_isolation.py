"""One message never stops a batch: a failure at any stage of auditing it becomes a dead letter
and a REJECTION record, and the valid events around it are audited in the same batch."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import fastavro
import pytest
from streamkit import TOPIC, compliant, messages, packs, processor, seal_fails_for, violating, wire

from auditor.errors import DecodeError
from auditor.events.codec import decode_json_line, event_to_mapping, raw_event_schema, strip_logical
from auditor.events.wire import SINGLE_OBJECT_MAGIC, SchemaAllowList, schema_fingerprint
from auditor.schemas import earlier_event_schemas
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.canonical import record_from_bytes
from auditor.trail.record import RecordType


def _check_batch(result: BatchResult, poison_index: int, n: int, reason: str) -> None:
    """Every message has exactly one record, in order, one chain 0..n-1; only the poison one rejected."""
    records = list(result.records)
    assert [r.seq for r in records] == list(range(n))
    assert [r.source.offset for r in records] == list(range(n))
    kinds = [r.record_type for r in records]
    assert kinds == [RecordType.REJECTION if i == poison_index else RecordType.DECISION for i in range(n)]
    rejection = records[poison_index].rejection
    assert rejection is not None and rejection.reason == reason
    assert result.dead_letters == [reason]
    audit = [o for o in result.outgoing if o.topic == "audit"]
    assert [record_from_bytes(o.value) for o in audit] == records
    (dlq,) = [o for o in result.outgoing if o.topic == "dead-letter"]
    assert dict(dlq.headers)["auditor.error.reason"] == reason.encode()
    assert len(result.audited) == n - 1 and len(result.occurred_at) == n - 1


def _batch(poison: int = 1) -> list[bytes]:
    values = [wire(compliant("ipasar", i)) for i in range(4)]
    values[poison] = wire(violating("ipasar", 0, event_id="poison"))
    return values


class _Boom(RuntimeError):
    pass


def test_a_decoder_fault_dead_letters_the_message_and_audits_the_rest():
    p = processor()
    real = p.decoder.decode

    def decode(value: bytes | None):  # our own seam: the processor's decoder
        if value is not None and b"poison" in value:
            raise _Boom("decoder bug")
        return real(value)

    p.decoder.decode = decode  # type: ignore[method-assign]
    _check_batch(p.process(messages(_batch())), 1, 4, "decode_failed")


def test_an_evaluator_fault_dead_letters_the_message_and_audits_the_rest():
    p = processor()
    real = p.evaluators["ipasar"]

    class Failing:
        compiled = real.compiled

        def __call__(self, event):
            if event.event_id == "poison":
                raise ZeroDivisionError("engine bug")
            return real(event)

    p.evaluators["ipasar"] = Failing()  # type: ignore[assignment]
    _check_batch(p.process(messages(_batch())), 1, 4, "evaluate_failed")


def test_a_record_builder_fault_dead_letters_the_message_and_audits_the_rest():
    class Pseudonymizer:  # our own seam: the injected pseudonymizer
        key_id = "k1"

        def __call__(self, identifier: str) -> str:
            if identifier == "u-poison":
                raise KeyError(identifier)
            return hashlib.sha256(identifier.encode()).hexdigest()[:32]

    p = processor()
    p.pseudonymizer = Pseudonymizer()
    values = _batch()
    poison = violating("ipasar", 0, event_id="poison")
    values[1] = wire(dataclasses.replace(poison, subject=dataclasses.replace(poison.subject, id="u-poison")))
    _check_batch(p.process(messages(values)), 1, 4, "build_failed")


def test_a_sealing_fault_dead_letters_the_message_and_audits_the_rest(monkeypatch: pytest.MonkeyPatch):
    seal_fails_for(monkeypatch, "poison")
    _check_batch(processor().process(messages(_batch())), 1, 4, "seal_failed")


def test_a_routing_fault_after_sealing_leaves_no_half_record(monkeypatch: pytest.MonkeyPatch):
    """The violation message fails after the record was sealed: the chain must not keep that record."""
    p = processor()
    real = p._violation_message

    def violation_message(d, record, *args, **kwargs):
        if d.event_id == "poison":
            raise TypeError("not JSON serialisable")
        return real(d, record, *args, **kwargs)

    monkeypatch.setattr(p, "_violation_message", violation_message)
    result = p.process(messages(_batch()))
    _check_batch(result, 1, 4, "route_failed")
    assert not [o for o in result.outgoing if o.topic == "violations"]


def test_a_fault_message_names_the_stage_and_class_but_not_the_exception_text():
    p = processor()

    def decode(value: bytes | None):
        raise _Boom("secret-payload-value")

    p.decoder.decode = decode  # type: ignore[method-assign]
    result = p.process(messages([b"x"]))
    (record,) = result.records
    assert record.rejection is not None
    assert "decode failed with _Boom" in record.rejection.message
    assert "secret-payload-value" not in record.rejection.message
    (dlq,) = [o for o in result.outgoing if o.topic == "dead-letter"]
    assert all(b"secret-payload-value" not in (v or b"") for _, v in dlq.headers)


def test_a_faulty_message_leaves_the_working_heads_of_the_good_ones():
    p = processor()
    calls = {"n": 0}
    real = p.decoder.decode

    def decode(value: bytes | None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Boom()
        return real(value)

    p.decoder.decode = decode  # type: ignore[method-assign]
    p.process(messages(_batch()))
    p.commit_heads()
    (r,) = p.process(messages([wire(compliant())], first_offset=4)).records
    assert r.seq == 4


# ---------------------------------------------------------------- times outside the datetime range

def _writer(logical: str) -> tuple[object, object]:
    doc = json.loads(earlier_event_schemas()[0].read_text())
    occurred = next(f for f in doc["fields"] if f["name"] == "occurred_at")
    occurred["type"]["logicalType"] = logical
    return fastavro.parse_schema(doc), fastavro.parse_schema(strip_logical(doc))


def _encode(parsed: object, raw: object, datum: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, raw, datum)
    return SINGLE_OBJECT_MAGIC + schema_fingerprint(parsed) + buf.getvalue()


def _rev1_datum(occurred: int) -> dict:
    d = event_to_mapping(compliant())
    d["actor"] = {k: v for k, v in d["actor"].items() if k != "organisation"}
    d["occurred_at"] = occurred
    return d


YEAR_10000_MICROS = 253402300800 * 10**6
BEFORE_YEAR_1_MICROS = -62135596801 * 10**6


@pytest.mark.parametrize("logical, occurred", [
    ("timestamp-millis", YEAR_10000_MICROS // 1000),
    ("timestamp-millis", BEFORE_YEAR_1_MICROS // 1000),
    ("timestamp-millis", 2**62),
    ("timestamp-micros", YEAR_10000_MICROS),
    ("timestamp-micros", BEFORE_YEAR_1_MICROS),
])
def test_an_avro_time_outside_the_datetime_range_is_a_bad_field_among_good_events(logical, occurred):
    parsed, raw = _writer(logical)
    allow = SchemaAllowList()
    allow.by_fp[schema_fingerprint(parsed)] = type(allow.by_fp[allow.reader_fp])(parsed, schema_fingerprint(parsed),
                                                                                 "test")
    p = processor(allow)
    values = [wire(compliant("ipasar", 0)), _encode(parsed, raw, _rev1_datum(occurred)), wire(compliant("ipasar", 1))]
    result = p.process(messages(values))
    (record,) = [r for r in result.records if r.record_type is RecordType.REJECTION]
    assert record.rejection is not None and record.rejection.reason == "bad_field"
    assert "occurred_at" in record.rejection.message and "out of range" in record.rejection.message
    assert len(result.audited) == 2


def test_a_millisecond_writer_in_range_is_read_as_the_same_instant():
    parsed, raw = _writer("timestamp-millis")
    allow = SchemaAllowList()
    allow.by_fp[schema_fingerprint(parsed)] = type(allow.by_fp[allow.reader_fp])(parsed, schema_fingerprint(parsed),
                                                                                 "test")
    event = compliant()
    millis = int(event.occurred_at.timestamp() * 1000)
    decoded = processor(allow).decoder.decode(_encode(parsed, raw, _rev1_datum(millis)))
    assert decoded.event.occurred_at == event.occurred_at


def test_the_bundled_schema_with_a_time_past_year_9999_is_a_bad_field():
    d = event_to_mapping(compliant())
    d["occurred_at"] = YEAR_10000_MICROS
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, raw_event_schema(), d)
    value = wire(compliant())[:10] + buf.getvalue()
    (r,) = processor().process(messages([value])).records
    assert r.rejection is not None and r.rejection.reason == "bad_field"


@pytest.mark.parametrize("occurred", [
    "10000-01-01T00:00:00Z", "+10000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00", 10**30, -(10**30), YEAR_10000_MICROS,
])
def test_a_json_time_outside_the_datetime_range_is_a_bad_field(occurred):
    doc = event_to_mapping(compliant(), json_time=True)
    doc["occurred_at"] = occurred
    with pytest.raises(DecodeError) as info:
        decode_json_line(json.dumps(doc))
    assert info.value.reason == "bad_field" and "out of range" in str(info.value)


def test_a_processor_without_packs_for_the_event_still_never_raises():
    p = BatchProcessor(processor().decoder, {"ipasar": packs()["ipasar"]}, processor().pseudonymizer,
                       processor().routing, "unit")
    result = p.process(messages([wire(compliant("ipmart")), wire(compliant("ipasar"))]))
    assert result.dead_letters == ["unknown_policy"] and len(result.audited) == 1
    assert result.records[0].chain_id == f"{TOPIC}/0"
