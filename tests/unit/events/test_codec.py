"""JSON and Avro decode to the same Event; every fault names its field, file and line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest

from auditor.errors import DecodeError
from auditor.events.codec import (
    event_from_mapping,
    event_schema,
    event_to_json,
    event_to_mapping,
    iter_event_file,
    write_avro_file,
)
from auditor.events.model import EventKind, Identifiability, LegalRequestType

GOOD = {
    "event_id": "ev-1", "occurred_at": "2026-03-01T12:00:00Z", "kind": "DISCLOSURE", "policy_id": "ipasar",
    "source_system": "risk-engine", "actor": {"type": "SERVICE", "id": "svc-9", "role": "credit"},
    "subject": {"id": "u-1", "age": 41, "region": "MY"}, "data_categories": ["account_information"],
    "purpose": "creditworthiness", "recipient": {"type": "credit_agency", "id": "ctos", "country": "MY",
                                                 "on_our_behalf": False},
    "legal_request": {"type": "NONE"}, "consent": {"third_party_sharing": True},
    "attributes": {"ticket": "T-1"},
}


def test_json_roundtrip_equal():
    e = event_from_mapping(GOOD)
    assert e.kind is EventKind.DISCLOSURE and e.identifiability is Identifiability.IDENTIFIED
    assert e.legal_request.type is LegalRequestType.NONE and e.consent.third_party_sharing
    assert event_from_mapping(json.loads(event_to_json(e))) == e


def test_avro_roundtrip_equal():
    e = event_from_mapping(GOOD)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, event_schema(), event_to_mapping(e))
    buf.seek(0)
    assert event_from_mapping(fastavro.schemaless_reader(buf, event_schema(), event_schema())) == e


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda m: m.pop("event_id"), "event_id"),
    (lambda m: m.pop("recipient"), "recipient"),
    (lambda m: m.update(kind="LEAK"), "kind"),
    (lambda m: m["subject"].update(age=-3), "subject.age"),
    (lambda m: m.update(data_categories=[]), "data_categories"),
    (lambda m: m["consent"].update(marketing="yes"), "consent.marketing"),
    (lambda m: m.update(occurred_at="yesterday"), "occurred_at"),
])
def test_bad_fields_are_named(mutate, field):
    m = json.loads(json.dumps(GOOD))
    mutate(m)
    with pytest.raises(DecodeError) as info:
        event_from_mapping(m)
    assert field in str(info.value)


def test_access_with_recipient_rejected():
    m = dict(GOOD, kind="ACCESS")
    with pytest.raises(DecodeError, match="must not have a 'recipient'"):
        event_from_mapping(m)


def test_jsonl_file_bad_line_named_and_rest_decoded(tmp_path: Path):
    p = tmp_path / "ev.jsonl"
    p.write_text(json.dumps(GOOD) + "\n{not json\n\n# comment\n" + json.dumps(dict(GOOD, event_id="ev-2")) + "\n")
    rows = list(iter_event_file(p))
    assert [r.line for r in rows] == [1, 2, 5]
    assert rows[1].event is None and rows[1].error is not None
    assert str(rows[1].error).startswith(f"{p}:2: not valid JSON")
    assert rows[2].event is not None and rows[2].event.event_id == "ev-2"


def test_avro_container_file(tmp_path: Path):
    e = event_from_mapping(GOOD)
    p = tmp_path / "ev.avro"
    write_avro_file(p, [e, e])
    rows = list(iter_event_file(p))
    assert [r.event for r in rows] == [e, e]
