"""EventDecoder on the wire: both framings decode, and hostile input is rejected with a reason.

Hostile bodies are built by editing one field of a valid encoding at its exact byte offset (found
by encoding the fields before it), so each case damages only what its name says.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest

from auditor.errors import DecodeError, SchemaError, TransientError
from auditor.events.codec import event_from_mapping, event_to_mapping, schema_path
from auditor.events.model import Event
from auditor.events.wire import (
    DEFAULT_MAX_BYTES,
    EventDecoder,
    SchemaAllowList,
    encode_confluent,
    encode_single_object,
    schema_fingerprint,
)

GOOD = {
    "event_id": "ev-1", "occurred_at": "2026-03-01T12:00:00Z", "kind": "DISCLOSURE", "policy_id": "ipasar",
    "source_system": "risk-engine", "actor": {"type": "SERVICE", "id": "svc-9", "role": "credit"},
    "subject": {"id": "u-1", "age": 41, "region": "MY"}, "data_categories": ["account_information"],
    "purpose": "creditworthiness", "recipient": {"type": "credit_agency", "id": "ctos", "country": "MY",
                                                 "on_our_behalf": False},
    "legal_request": {"type": "NONE"}, "consent": {"third_party_sharing": True},
    "attributes": {"ticket": "T-1"},
}
SCHEMA_JSON: dict[str, Any] = json.loads(schema_path("privacy_event.avsc").read_text())
FIELDS = [f["name"] for f in SCHEMA_JSON["fields"]]


def make_event(**changes: Any) -> Event:
    return event_from_mapping({**GOOD, **changes})


def zigzag(n: int) -> bytes:
    """Avro long: zigzag, then base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def field_offset(event: Event, name: str) -> int:
    """Byte offset of field ``name`` in the Avro body of ``event``."""
    n = FIELDS.index(name)
    prefix = fastavro.parse_schema({**SCHEMA_JSON, "name": "Prefix", "fields": SCHEMA_JSON["fields"][:n]},
                                   named_schemas={})
    datum = event_to_mapping(event)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, prefix, {k: datum[k] for k in FIELDS[:n]})
    return len(buf.getvalue())


def single_object(event: Event) -> bytes:
    return encode_single_object(event_to_mapping(event))


def with_body_edit(event: Event, field: str, old_len: int, new: bytes) -> bytes:
    """The single-object message of ``event`` with ``old_len`` bytes at ``field`` replaced by ``new``."""
    value = single_object(event)
    at = 10 + field_offset(event, field)
    return value[:at] + new + value[at + old_len:]


def rejected(decoder: EventDecoder, value: bytes | None) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decoder.decode(value)
    return info.value


# ---------------------------------------------------------------- accepted

def test_single_object_decodes_to_the_event_and_its_canonical_body():
    event = make_event()
    value = single_object(event)
    decoded = EventDecoder().decode(value)
    assert decoded.event == event
    assert decoded.canonical == value[10:]


def test_confluent_framing_with_a_configured_id_decodes():
    event = make_event()
    allow = SchemaAllowList(confluent_ids={7: "bundled"})
    decoded = EventDecoder(allow).decode(encode_confluent(event_to_mapping(event), 7))
    assert decoded.event == event


def test_allow_listed_evolved_writer_schema_is_resolved_to_the_reader(tmp_path: Path):
    evolved = {**SCHEMA_JSON, "fields": [*SCHEMA_JSON["fields"],
                                         {"name": "channel", "type": "string", "default": "web"}]}
    path = tmp_path / "evolved.avsc"
    path.write_text(json.dumps(evolved))
    parsed = fastavro.parse_schema(evolved, named_schemas={})
    event = make_event()
    datum = {**event_to_mapping(event), "channel": "app"}
    value = encode_single_object(datum, parsed)
    decoder = EventDecoder(SchemaAllowList([path]))
    decoded = decoder.decode(value)
    assert decoded.event == event
    assert decoded.canonical == single_object(event)[10:]  # the trail digests the reader's encoding
    assert rejected(decoder, value + b"\x00").reason == "hostile_encoding"


# ---------------------------------------------------------------- framing and size

def test_tombstone_is_rejected_as_undecodable():
    assert rejected(EventDecoder(), None).reason == "undecodable"


@pytest.mark.parametrize("value", [b"", b"\xc3", b"\xc3\x01\x00", b"not avro", b'{"json": true}'],
                         ids=["empty", "half-magic", "short-fingerprint", "text", "json"])
def test_unframed_bytes_are_rejected_as_undecodable(value: bytes):
    assert rejected(EventDecoder(), value).reason == "undecodable"


def test_oversize_message_is_rejected_before_decoding():
    value = single_object(make_event())
    decoder = EventDecoder(max_bytes=len(value) - 1)
    err = rejected(decoder, value)
    assert err.reason == "oversize" and str(len(value)) in str(err)
    assert rejected(EventDecoder(), b"\xc3\x01" + b"\x00" * DEFAULT_MAX_BYTES).reason == "oversize"


def test_unknown_schema_fingerprint_is_rejected():
    body = single_object(make_event())[10:]
    err = rejected(EventDecoder(), b"\xc3\x01" + b"\x11" * 8 + body)
    assert isinstance(err, SchemaError) and err.reason == "unknown_schema"


def test_confluent_unknown_schema_id_without_registry_is_rejected():
    body = single_object(make_event())[10:]
    err = rejected(EventDecoder(), b"\x00" + struct.pack(">I", 99) + body)
    assert isinstance(err, SchemaError) and err.reason == "unknown_schema"


# ---------------------------------------------------------------- hostile bodies

def test_negative_union_index_is_rejected():
    # legal_basis is ["null", "string"]; None encodes as index 0 (one byte 0x00)
    event = make_event()
    for index in (-1, -2, -64):
        err = rejected(EventDecoder(), with_body_edit(event, "legal_basis", 1, zigzag(index)))
        assert err.reason in {"hostile_encoding", "undecodable"}, index


def test_out_of_range_union_index_is_rejected():
    err = rejected(EventDecoder(), with_body_edit(make_event(), "legal_basis", 1, zigzag(5)))
    assert err.reason == "undecodable"


@pytest.mark.parametrize("count", [2**31, 2**40, 2**62], ids=["2^31", "2^40", "2^62"])
def test_huge_array_count_is_rejected_without_allocating(count: int):
    # data_categories holds one item: block count 1 (0x02)
    value = with_body_edit(make_event(), "data_categories", 1, zigzag(count))
    assert rejected(EventDecoder(), value).reason == "hostile_encoding"


def test_huge_map_count_is_rejected():
    value = with_body_edit(make_event(), "attributes", 1, zigzag(2**40))
    assert rejected(EventDecoder(), value).reason == "hostile_encoding"


def test_huge_string_length_is_rejected():
    value = with_body_edit(make_event(), "event_id", 1, zigzag(2**40))
    assert rejected(EventDecoder(), value).reason == "hostile_encoding"


def test_negative_block_count_is_rejected_as_non_canonical():
    # legal in Avro (count -n followed by the block's byte size) but never written by our producers
    event = make_event()
    size = len("account_information") + 1
    value = with_body_edit(event, "data_categories", 1, zigzag(-1) + zigzag(size))
    assert rejected(EventDecoder(), value).reason == "hostile_encoding"


def test_trailing_bytes_are_rejected():
    value = single_object(make_event())
    for extra in (b"\x00", b"\x02ab", b"x" * 100):
        assert rejected(EventDecoder(), value + extra).reason == "hostile_encoding"


def test_non_minimal_varint_is_rejected():
    event = make_event()
    n = len(event.event_id)
    value = with_body_edit(event, "event_id", 1, bytes([zigzag(n)[0] | 0x80, 0x00]))
    assert rejected(EventDecoder(), value).reason == "hostile_encoding"


def test_truncated_body_is_rejected():
    value = single_object(make_event())
    for cut in (1, 5, len(value) // 2):
        assert rejected(EventDecoder(), value[:-cut]).reason == "hostile_encoding"


def test_enum_index_out_of_range_is_rejected():
    value = with_body_edit(make_event(), "kind", 1, zigzag(9))
    assert rejected(EventDecoder(), value).reason == "undecodable"


def test_invalid_utf8_string_is_rejected():
    event = make_event()
    value = with_body_edit(event, "event_id", 1 + len(event.event_id), zigzag(3) + b"\xff\xfe\xfd")
    assert rejected(EventDecoder(), value).reason == "undecodable"


def test_semantically_invalid_event_is_rejected_with_the_field_named():
    # Avro-valid, but an ACCESS must not name a recipient
    event = make_event()
    datum = {**event_to_mapping(event), "kind": "ACCESS"}
    err = rejected(EventDecoder(), encode_single_object(datum))
    assert "recipient" in str(err)


# ---------------------------------------------------------------- schema registry

def _registry_answer(schema: dict[str, Any]) -> bytes:
    return json.dumps({"schema": json.dumps(schema)}).encode()


def test_registry_schema_matching_an_allow_listed_fingerprint_is_used_and_cached():
    calls: list[str] = []

    def fetch(url: str) -> bytes:
        calls.append(url)
        return _registry_answer(SCHEMA_JSON)

    allow = SchemaAllowList(registry_url="http://registry.invalid/", fetch=fetch)
    decoder = EventDecoder(allow)
    value = encode_confluent(event_to_mapping(make_event()), 41)
    assert decoder.decode(value).event == make_event()
    assert decoder.decode(value).event == make_event()
    assert calls == ["http://registry.invalid/schemas/ids/41"]


def test_registry_schema_that_is_not_allow_listed_is_rejected():
    other = {**SCHEMA_JSON, "fields": [*SCHEMA_JSON["fields"], {"name": "x", "type": "int", "default": 0}]}
    allow = SchemaAllowList(registry_url="http://registry.invalid", fetch=lambda url: _registry_answer(other))
    err = rejected(EventDecoder(allow), encode_confluent(event_to_mapping(make_event()), 5))
    assert isinstance(err, SchemaError) and err.reason == "unknown_schema"
    assert schema_fingerprint(fastavro.parse_schema(other, named_schemas={})).hex() in str(err)


def test_registry_garbage_answer_is_rejected():
    allow = SchemaAllowList(registry_url="http://registry.invalid", fetch=lambda url: b"<html>")
    assert rejected(EventDecoder(allow), encode_confluent(event_to_mapping(make_event()), 5)).reason \
        == "unknown_schema"


def test_registry_outage_is_transient_not_a_decode_error():
    def down(url: str) -> bytes:
        raise TransientError("schema registry unreachable")

    allow = SchemaAllowList(registry_url="http://registry.invalid", fetch=down)
    with pytest.raises(TransientError):
        EventDecoder(allow).decode(encode_confluent(event_to_mapping(make_event()), 5))


def test_confluent_id_mapped_to_an_unknown_fingerprint_is_a_config_time_error():
    with pytest.raises(SchemaError):
        SchemaAllowList(confluent_ids={3: "00" * 8})
