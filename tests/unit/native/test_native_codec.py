"""The native event codec (auditor.native) against the Python reference, byte for byte.

The reference: auditor.events.wire.EventDecoder (the hostile-encoding check by re-encoding),
auditor.events.codec.canonical_bytes (the file path's digest input) and fastavro.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path

import fastavro
import pytest
from hostilekit import GOOD, GOOD_VALUE, HOSTILE, edited, field_offset
from nativekit import EVENT_SCHEMA, PARSED_RAW, plain, zigzag

from auditor import _native
from auditor.errors import DecodeError, SchemaError
from auditor.events.codec import canonical_bytes, event_from_mapping, event_to_mapping, iter_json_lines
from auditor.events.model import Event
from auditor.events.wire import (
    SINGLE_OBJECT_MAGIC,
    EventDecoder,
    SchemaAllowList,
    encode_confluent,
    encode_single_object,
)
from auditor.native import Decoded, NativeEventDecoder, Refused, canonical_event

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (ROOT / "tests/data/events").glob("*.jsonl") if p.name != "malformed.jsonl")
FIXTURE = ROOT / "tests/data/native"


def example_events() -> list[Event]:
    events = [d.event for f in EXAMPLES for d in iter_json_lines(f)]
    assert len(events) > 200 and all(e is not None for e in events)
    return events  # type: ignore[return-value]


@pytest.fixture(scope="module")
def native() -> NativeEventDecoder:
    return NativeEventDecoder()


def one(decoder: NativeEventDecoder, value: bytes | None) -> Decoded | Refused:
    return decoder.decode_facts([value])[0]


def python_reason(value: bytes | None, allow: SchemaAllowList | None = None) -> str | None:
    try:
        EventDecoder(allow).decode(value)
    except DecodeError as exc:
        return exc.reason
    return None


# ---------------------------------------------------------------- equality with the reference

def test_every_example_event_has_the_reference_canonical_bytes_and_digest(native):
    events = example_events()
    values = [encode_single_object(event_to_mapping(e)) for e in events]
    results = native.decode_facts(values)
    for e, v, r in zip(events, values, results, strict=True):
        assert isinstance(r, Decoded), (e.event_id, r)
        reference = EventDecoder().decode(v)
        assert r.canonical == reference.canonical == canonical_bytes(e), e.event_id
        assert r.digest == hashlib.sha256(reference.canonical).digest(), e.event_id


def test_every_example_event_decodes_to_fastavros_datum_and_the_same_event(native):
    events = example_events()
    values = [encode_single_object(event_to_mapping(e)) for e in events]
    decoded = native.decode_events(values)
    for e, v, d in zip(events, values, decoded, strict=True):
        assert not isinstance(d, DecodeError), d
        assert d.event == e == EventDecoder().decode(v).event
    datums = native._codec.decode_batch(values, datum=True)
    for v, d in zip(values, datums, strict=True):
        assert d.facts == fastavro.schemaless_reader(io.BytesIO(v[10:]), PARSED_RAW, None)


def test_facts_are_the_schemas_leaf_fields_in_order(native):
    e = event_from_mapping(GOOD)
    r = one(native, encode_single_object(event_to_mapping(e)))
    assert isinstance(r, Decoded)
    facts = dict(zip(native.fact_names, r.facts, strict=True))
    assert native.fact_names[:5] == ["event_id", "occurred_at", "kind", "policy_id", "source_system"]
    assert facts["actor.type"] == "SERVICE" and facts["subject.age"] == 41
    assert facts["recipient.type"] == "credit_agency" and facts["recipient.on_our_behalf"] is False
    assert facts["data_categories"] == ("account_information",)
    assert facts["attributes"] == (("ticket", "T-1"),)
    assert facts["consent.third_party_sharing"] is True and facts["transfer.safeguard"] == "NONE"
    hash(r.facts)  # hashable: usable as a memo key
    access = one(native, encode_single_object(event_to_mapping(event_from_mapping(
        {**GOOD, "kind": "ACCESS", "recipient": None}))))
    assert isinstance(access, Decoded)
    assert dict(zip(native.fact_names, access.facts, strict=True))["recipient.type"] is None


def test_a_chosen_subset_of_facts_comes_in_the_order_asked():
    dec = NativeEventDecoder(facts=["purpose", "subject.region", "kind", "recipient.id"])
    r = one(dec, encode_single_object(event_to_mapping(event_from_mapping(GOOD))))
    assert isinstance(r, Decoded) and r.facts == ("creditworthiness", "MY", "DISCLOSURE", "ctos")
    with pytest.raises(ValueError, match="no field"):
        NativeEventDecoder(facts=["subject.shoe_size"])


def test_map_order_does_not_change_the_digest(native):
    attrs = {"b": "2", "a": "1", "c": "3", "ä": "4"}
    e = event_from_mapping({**GOOD, "attributes": attrs})
    rev = event_from_mapping({**GOOD, "attributes": dict(reversed(list(attrs.items())))})
    a, b = native.decode_facts([encode_single_object(event_to_mapping(e)), encode_single_object(event_to_mapping(rev))])
    assert isinstance(a, Decoded) and isinstance(b, Decoded)
    assert a.digest == b.digest and a.canonical == b.canonical
    in_order = event_from_mapping({**GOOD, "attributes": dict(sorted(attrs.items()))})
    assert a.canonical == canonical_bytes(in_order)  # the reference's bytes when keys come sorted
    assert canonical_event(e) == canonical_event(rev) == (a.canonical, a.digest)  # the file path


# ---------------------------------------------------------------- the Java BlockingBinaryEncoder fixture

def fixture_bodies() -> list[bytes]:
    buf = (FIXTURE / "blocking_events.bin").read_bytes()
    out, pos = [], 0
    while pos < len(buf):
        (n,) = struct.unpack(">I", buf[pos:pos + 4])
        out.append(buf[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def test_java_blocking_encoder_output_gets_the_json_paths_digest():
    bodies = fixture_bodies()
    events = [d.event for d in iter_json_lines(FIXTURE / "events.jsonl")]
    assert len(bodies) == len(events) == 260
    allow = SchemaAllowList([FIXTURE / "writer.avsc"])
    writer_fp = [fp for fp, ws in allow.by_fp.items() if ws.name.endswith("writer.avsc")] or [allow.reader_fp]
    values = [SINGLE_OBJECT_MAGIC + writer_fp[0] + b for b in bodies]
    results = NativeEventDecoder(allow).decode_events(values)
    blocked = 0
    for body, e, r in zip(bodies, events, results, strict=True):
        assert not isinstance(r, DecodeError), (e and e.event_id, r)
        assert e is not None and r.event == e
        canonical_bytes_, digest = canonical_event(e)
        assert (r.canonical, r.digest) == (canonical_bytes_, digest), e.event_id
        reference = python_reason(SINGLE_OBJECT_MAGIC + writer_fp[0] + body, allow)
        assert reference in (None, "hostile_encoding"), e.event_id
        blocked += reference == "hostile_encoding"  # the reference refuses the blocked form
    assert blocked >= 240  # every event with an array or map: Java wrote it in negative-count blocks


def test_fixture_really_holds_negative_block_counts():
    # data_categories of the 40-category event: Java wrote several blocks of -n items + byte size
    events = [d.event for d in iter_json_lines(FIXTURE / "events.jsonl")]
    i = next(i for i, e in enumerate(events) if e and e.event_id == "blocking-40")
    body = fixture_bodies()[i]
    writer = json.loads((FIXTURE / "writer.avsc").read_text())  # the schema the fixture was written with
    names = [f["name"] for f in writer["fields"]]
    parsed = fastavro.parse_schema(writer, named_schemas={})
    datum = fastavro.schemaless_reader(io.BytesIO(body), parsed, None)
    n = names.index("data_categories")
    before = plain({k: datum[k] for k in names[:n]},  # type: ignore[index]
                   fastavro.parse_schema({**writer, "name": "P", "fields": writer["fields"][:n]}, named_schemas={}))
    count = body[len(before)]
    assert count & 1, "a negative block count (odd zigzag)"


# ---------------------------------------------------------------- hostile encodings (hostilekit)

@pytest.mark.parametrize("name", list(HOSTILE))
def test_native_refuses_what_the_python_decoder_refuses_with_the_same_reason(native, name):
    value = HOSTILE[name]
    reference = python_reason(value)
    assert reference is not None, "the reference refuses it"
    r = one(native, value)
    assert isinstance(r, Refused), name
    assert r.reason == reference, (name, r.message)
    assert "T-1" not in r.message and "svc-9" not in r.message  # no payload values in messages


def test_refusals_name_the_field_and_become_decode_errors(native):
    r = one(native, edited("event_id", 1, zigzag(2**40)))
    assert isinstance(r, Refused) and "'event_id'" in r.message
    r = one(native, edited("consent", 1, b"\x02"))
    assert isinstance(r, Refused) and "'consent.marketing'" in r.message
    with pytest.raises(SchemaError) as info:
        native.decode(HOSTILE["unknown-fingerprint"])
    assert info.value.reason == "unknown_schema"
    with pytest.raises(DecodeError) as info2:
        native.decode(HOSTILE["trailing-byte"])
    assert info2.value.reason == "hostile_encoding"


def test_semantically_invalid_event_is_refused_like_the_python_path(native):
    datum = {**event_to_mapping(event_from_mapping(GOOD)), "kind": "ACCESS"}
    value = encode_single_object(datum)
    (r,) = native.decode_events([value])
    assert isinstance(r, DecodeError) and "recipient" in str(r)
    assert isinstance(one(native, value), Decoded)  # facts alone: Avro-valid


def test_blocked_arrays_and_maps_are_valid_and_canonicalised(native):
    # one item in a block of -1 items with its byte size: valid Avro, refused by the Python decoder
    size = len("account_information") + 1
    value = edited("data_categories", 1, zigzag(-1) + zigzag(size))
    assert python_reason(value) == "hostile_encoding"
    r = one(native, value)
    assert isinstance(r, Decoded) and r.canonical == GOOD_VALUE[10:]


def test_block_size_that_does_not_match_its_items_is_refused(native):
    size = len("account_information") + 1
    for wrong in (size - 1, size + 1):
        r = one(native, edited("data_categories", 1, zigzag(-1) + zigzag(wrong)))
        assert isinstance(r, Refused) and r.reason == "hostile_encoding", wrong


def test_most_negative_block_count_is_refused(native):
    r = one(native, edited("data_categories", 1, zigzag(-2**63) + zigzag(1)))
    assert isinstance(r, Refused) and r.reason == "hostile_encoding"


def test_duplicate_map_keys_are_refused(native):
    datum = event_to_mapping(event_from_mapping(GOOD))
    at = 10 + field_offset(datum, "attributes")
    entry = zigzag(1) + b"k" + zigzag(1) + b"v"
    for entries in ([entry, entry], [entry, zigzag(1) + b"a" + zigzag(0), entry]):
        value = GOOD_VALUE[:at] + zigzag(len(entries)) + b"".join(entries) + b"\x00"
        r = one(native, value)
        assert isinstance(r, Refused) and r.reason == "hostile_encoding" and "duplicate" in r.message
        assert python_reason(value) == "hostile_encoding"


def test_nesting_is_bounded():
    # a recursive schema: a linked list 100 deep is refused, 20 deep is fine
    schema = {"type": "record", "name": "Node", "fields": [
        {"name": "next", "type": ["null", "Node"]}]}
    text = json.dumps(schema)
    fp = b"\x01" * 8
    codec = _native.EventCodec(text, [(fp, text)], facts=[])
    deep = b"\x02" * 100 + b"\x00"
    shallow = b"\x02" * 20 + b"\x00"
    a, b = codec.decode_batch([b"\xc3\x01" + fp + deep, b"\xc3\x01" + fp + shallow])
    assert isinstance(a, Refused) and a.reason == "hostile_encoding" and "deep" in a.message
    assert isinstance(b, Decoded) and b.canonical == shallow


# ---------------------------------------------------------------- framing, schemas, evolution

def test_confluent_framing_and_registry_look_up():
    event = event_from_mapping(GOOD)
    calls: list[str] = []

    def fetch(url: str) -> bytes:
        calls.append(url)
        return json.dumps({"schema": json.dumps(EVENT_SCHEMA)}).encode()

    configured = NativeEventDecoder(SchemaAllowList(confluent_ids={7: "bundled"}))
    assert configured.decode(encode_confluent(event_to_mapping(event), 7)).event == event
    registry = NativeEventDecoder(SchemaAllowList(registry_url="http://registry.invalid", fetch=fetch))
    values = [encode_confluent(event_to_mapping(event), 41)] * 3
    assert all(not isinstance(r, DecodeError) and r.event == event for r in registry.decode_events(values))
    assert registry.decode(values[0]).event == event
    assert calls == ["http://registry.invalid/schemas/ids/41"]
    r = one(NativeEventDecoder(), values[0])
    assert isinstance(r, Refused) and r.reason == "unknown_schema" and r.schema_id == 41


def test_evolved_writer_schemas_are_resolved_to_the_reader(tmp_path: Path):
    # the writer added a field, dropped one that has a default, and moved a record to the end
    fields = [f for f in EVENT_SCHEMA["fields"] if f["name"] not in ("legal_basis", "transfer")]
    transfer = next(f for f in EVENT_SCHEMA["fields"] if f["name"] == "transfer")
    evolved = {**EVENT_SCHEMA, "fields": [*fields, {"name": "channel", "type": "string", "default": "web"}, transfer]}
    path = tmp_path / "evolved.avsc"
    path.write_text(json.dumps(evolved))
    parsed = fastavro.parse_schema(evolved, named_schemas={})
    event = event_from_mapping({**GOOD, "transfer": {"cross_border": True, "destination_country": "SG"}})
    datum = {**event_to_mapping(event), "channel": "app"}
    value = encode_single_object(datum, parsed)
    allow = SchemaAllowList([path])
    native = NativeEventDecoder(allow).decode(value)
    reference = EventDecoder(allow).decode(value)
    assert native.event == reference.event == event
    assert native.canonical == reference.canonical == canonical_bytes(event)
    assert isinstance(one(NativeEventDecoder(allow), value + b"\x00"), Refused)


def test_a_new_reader_field_is_picked_up_from_the_schema_without_a_rebuild():
    # a future fact: an optional field with a default, added to a nested record
    actor = next(f for f in EVENT_SCHEMA["fields"] if f["name"] == "actor")
    new_actor = {**actor, "type": {**actor["type"], "fields": [
        *actor["type"]["fields"], {"name": "department", "type": ["null", "string"], "default": None}]}}
    reader = {**EVENT_SCHEMA, "fields": [new_actor if f["name"] == "actor" else f for f in EVENT_SCHEMA["fields"]]}
    old, new = json.dumps(EVENT_SCHEMA), json.dumps(reader)
    codec = _native.EventCodec(new, [(b"\x01" * 8, old), (b"\x02" * 8, new)])
    assert "actor.department" in codec.fact_names
    datum = event_to_mapping(event_from_mapping(GOOD))
    new_datum = {**datum, "actor": {**datum["actor"], "department": "acme"}}
    a, b = codec.decode_batch([b"\xc3\x01" + b"\x01" * 8 + plain(datum, fastavro.parse_schema(EVENT_SCHEMA,
                                                                                              named_schemas={})),
                               b"\xc3\x01" + b"\x02" * 8 + plain(new_datum, fastavro.parse_schema(
                                   reader, named_schemas={}))])
    assert isinstance(a, Decoded) and isinstance(b, Decoded)
    i = codec.fact_names.index("actor.department")
    assert a.facts[i] is None and b.facts[i] == "acme"
    with_default = {**datum, "actor": {**datum["actor"], "department": None}}
    assert a.canonical == plain(with_default, fastavro.parse_schema(reader, named_schemas={}))


def test_incompatible_writer_schema_is_a_construction_error():
    reader = json.dumps(EVENT_SCHEMA)
    writer = json.dumps({**EVENT_SCHEMA, "fields": [f for f in EVENT_SCHEMA["fields"] if f["name"] != "purpose"]})
    with pytest.raises(ValueError, match="purpose"):
        _native.EventCodec(reader, [(b"\x01" * 8, writer)])


def test_earlier_schema_revisions_decode_like_the_reference():
    from auditor.schemas import earlier_event_schemas

    event = event_from_mapping(GOOD)
    for path in earlier_event_schemas():
        old = json.loads(Path(path).read_text())
        parsed = fastavro.parse_schema(old, named_schemas={})
        names = {f["name"] for f in old["fields"]}
        datum = {k: v for k, v in event_to_mapping(event).items() if k in names}
        actor = next(f for f in old["fields"] if f["name"] == "actor")["type"]
        datum["actor"] = {k: v for k, v in datum["actor"].items() if k in {f["name"] for f in actor["fields"]}}
        value = encode_single_object(datum, parsed)
        native = NativeEventDecoder().decode(value)
        reference = EventDecoder().decode(value)
        assert native.event == reference.event
        assert native.canonical == reference.canonical
        assert native.digest == hashlib.sha256(reference.canonical).digest()
