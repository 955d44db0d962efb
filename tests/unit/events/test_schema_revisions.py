"""Event schema revision 2 (actor.organisation): old producers keep working, the fact round-trips."""

from __future__ import annotations

import json

import fastavro
import pytest

from auditor.errors import DecodeError
from auditor.events.codec import event_from_mapping, event_to_json, event_to_mapping, schema_path
from auditor.events.model import ActorOrganisation
from auditor.events.wire import EventDecoder, encode_single_object
from auditor.schemas import earlier_event_schemas

EVENT = {
    "event_id": "ev-1", "occurred_at": "2026-03-01T12:00:00Z", "kind": "ACCESS", "policy_id": "inper",
    "source_system": "crm", "actor": {"type": "CONTRACTOR", "id": "ctr-1", "role": "support"},
    "subject": {"id": "u-1", "age": 41}, "data_categories": ["contact_information"], "purpose": "customer_service",
}


def test_absent_organisation_is_unknown_not_ours():
    assert event_from_mapping(EVENT).actor.organisation is ActorOrganisation.UNKNOWN


@pytest.mark.parametrize("org", ["OURS", "PROCESSOR", "THIRD_PARTY", "processor"])
def test_organisation_round_trips_through_json_and_avro(org):
    e = event_from_mapping({**EVENT, "actor": {**EVENT["actor"], "organisation": org}})
    assert e.actor.organisation is ActorOrganisation(org.upper())
    assert event_from_mapping(json.loads(event_to_json(e))) == e
    decoded = EventDecoder().decode(encode_single_object(event_to_mapping(e))).event
    assert decoded == e


def test_unknown_organisation_is_a_decode_error_naming_the_field():
    with pytest.raises(DecodeError, match="actor.organisation"):
        event_from_mapping({**EVENT, "actor": {**EVENT["actor"], "organisation": "PARTNER"}})


def test_revision_1_writers_are_still_accepted_and_read_as_unknown_organisation():
    (rev1,) = earlier_event_schemas()
    parsed = fastavro.parse_schema(json.loads(rev1.read_text()), named_schemas={})
    def actor_fields(schema):
        actor = next(f for f in schema["fields"] if f["name"] == "actor")
        return [f["name"] for f in actor["type"]["fields"]]

    assert "organisation" not in actor_fields(json.loads(rev1.read_text()))
    assert "organisation" in actor_fields(json.loads(schema_path("privacy_event.avsc").read_text()))
    datum = event_to_mapping(event_from_mapping(EVENT))
    del datum["actor"]["organisation"]
    decoded = EventDecoder().decode(encode_single_object(datum, parsed))
    assert decoded.event.actor.organisation is ActorOrganisation.UNKNOWN
    assert decoded.event == event_from_mapping(EVENT)
