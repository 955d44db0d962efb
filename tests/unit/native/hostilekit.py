"""One valid event and the hostile encodings derived from it, shared by the native codec's tests
(tests/unit/native/test_native_codec.py) and the hot path's (tests/unit/stream/test_stream_native.py).

Each hostile input is the valid single-object message with a few bytes edited at a field's
offset (found by encoding the fields before it with fastavro), or a framing the decoder must refuse.
"""

from __future__ import annotations

import struct
from typing import Any

import fastavro
from nativekit import EVENT_SCHEMA, plain, zigzag

from auditor.events.codec import event_from_mapping, event_to_mapping
from auditor.events.wire import DEFAULT_MAX_BYTES, encode_single_object

FIELDS = [f["name"] for f in EVENT_SCHEMA["fields"]]
GOOD: dict[str, Any] = {
    "event_id": "ev-1", "occurred_at": "2026-03-01T12:00:00Z", "kind": "DISCLOSURE", "policy_id": "ipasar",
    "source_system": "risk-engine", "actor": {"type": "SERVICE", "id": "svc-9", "role": "credit"},
    "subject": {"id": "u-1", "age": 41, "region": "MY"}, "data_categories": ["account_information"],
    "purpose": "creditworthiness", "recipient": {"type": "credit_agency", "id": "ctos", "country": "MY",
                                                 "on_our_behalf": False},
    "consent": {"third_party_sharing": True}, "attributes": {"ticket": "T-1"},
}
GOOD_VALUE = encode_single_object(event_to_mapping(event_from_mapping(GOOD)))


def field_offset(datum: dict[str, Any], name: str) -> int:
    """Byte offset of a top-level field in the Avro body (after the 10-byte single-object header)."""
    n = FIELDS.index(name)
    prefix = fastavro.parse_schema({**EVENT_SCHEMA, "name": "Prefix", "fields": EVENT_SCHEMA["fields"][:n]},
                                   named_schemas={})
    return len(plain({k: datum[k] for k in FIELDS[:n]}, prefix))


def edited(field: str, old_len: int, new: bytes, **changes: Any) -> bytes:
    """GOOD (with ``changes``) encoded, its ``old_len`` bytes at ``field`` replaced by ``new``."""
    datum = event_to_mapping(event_from_mapping({**GOOD, **changes}))
    value = encode_single_object(datum)
    at = 10 + field_offset(datum, field)
    return value[:at] + new + value[at + old_len:]


#: name -> a message value every decoder must refuse (the reason is the Python reference's)
HOSTILE: dict[str, bytes | None] = {
    "tombstone": None,
    "empty": b"",
    "half-magic": b"\xc3",
    "text": b"not avro",
    "unknown-fingerprint": b"\xc3\x01" + b"\x11" * 8 + GOOD_VALUE[10:],
    "unknown-confluent-id": b"\x00" + struct.pack(">I", 99) + GOOD_VALUE[10:],
    "oversize": b"\xc3\x01" + b"\x00" * DEFAULT_MAX_BYTES,
    "negative-union-index": edited("legal_basis", 1, zigzag(-1)),
    "union-index-out-of-range": edited("legal_basis", 1, zigzag(5)),
    "array-count-2^31": edited("data_categories", 1, zigzag(2**31)),
    "array-count-2^62": edited("data_categories", 1, zigzag(2**62)),
    "map-count-2^40": edited("attributes", 1, zigzag(2**40)),
    "string-length-2^40": edited("event_id", 1, zigzag(2**40)),
    "trailing-byte": GOOD_VALUE + b"\x00",
    "trailing-100": GOOD_VALUE + b"x" * 100,
    "non-minimal-varint": edited("event_id", 1, bytes([zigzag(4)[0] | 0x80, 0x00])),
    "truncated-1": GOOD_VALUE[:-1],
    "truncated-half": GOOD_VALUE[:len(GOOD_VALUE) // 2],
    "enum-index-9": edited("kind", 1, zigzag(9)),
    "invalid-utf8": edited("event_id", 5, zigzag(3) + b"\xff\xfe\xfd"),
    "boolean-byte-2": edited("consent", 1, b"\x02"),
    "negative-string-length": edited("event_id", 1, zigzag(-3)),
    "overlong-varint": edited("occurred_at", 8, b"\xff" * 11),
}
