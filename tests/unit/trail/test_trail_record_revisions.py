"""Audit record schema revisions: the ledger field appended in revision 2, read from records of
every revision (a body that ends after ``rejection`` was written by revision 1)."""

from __future__ import annotations

import io
import json
import random
from dataclasses import replace

import fastavro
import pytest

from auditor.errors import TrailCorruption
from auditor.events.codec import schema_path
from auditor.events.model import ActorOrganisation, LegalRequest, LegalRequestType
from auditor.trail import SourceRef
from auditor.trail.canonical import encode_body, encode_head, record_from_bytes, record_schema
from auditor.trail.chain import ChainHead, hash_record_bytes, seal_bytes
from auditor.trail.record import (
    MAX_TEXT,
    CorrectedRecord,
    LedgerFacts,
    LedgerRead,
    RecordType,
    build_record,
    record_to_event,
)
from auditor.trail.segment import _parse_header, header_bytes
from tests.unit.trail.trailkit import T0, make_decision, make_event, make_records

LEDGER = LedgerFacts(3, 17, (LedgerRead("consent", "marketing", None, "acme", False, (4, 5)),
                             LedgerRead("birth_date", None, None, None, "2010-01-01", (2,))),
                     CorrectedRecord("events/3", 5, (9,)))


def test_a_record_with_ledger_facts_round_trips_and_matches_fastavro(keys):
    r = make_records(keys, 1)[0]._replace(record_type=RecordType.CORRECTION, ledger=LEDGER)
    data, _ = seal_bytes(ChainHead.genesis(r.chain_id), r)
    back = record_from_bytes(data)
    assert back.ledger == LEDGER and back.record_type is RecordType.CORRECTION
    m = fastavro.schemaless_reader(io.BytesIO(data), record_schema(), None)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, record_schema(), m)
    assert buf.getvalue() == data


def revision_bytes(r, revision: int) -> bytes:
    """``r`` as ``revision`` wrote it: fastavro under audit_record.<revision>.avsc (the fields that
    revision did not have are left out), sealed at seq 0."""
    old = fastavro.parse_schema(json.loads(schema_path(f"audit_record.{revision}.avsc").read_text()))
    data, _ = seal_bytes(ChainHead.genesis(r.chain_id), r)
    m = fastavro.schemaless_reader(io.BytesIO(data), record_schema(), None)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old, {**m, "body_len": 0, "record_hash": bytes(32)})
    genesis = ChainHead.genesis(r.chain_id).head_hash
    body = buf.getvalue()[len(encode_head(r.chain_id, 0, genesis, 0)):-32]
    data = encode_head(r.chain_id, 0, genesis, len(body)) + body
    data += hash_record_bytes(data)
    m = fastavro.schemaless_reader(io.BytesIO(data), old, None)  # a valid record of that revision
    assert m["chain_id"] == r.chain_id and m["body_len"] == len(body)
    return data


def revision_1_bytes(r) -> bytes:
    return revision_bytes(r, 1)


def test_a_revision_1_record_still_decodes_with_no_ledger_facts(keys):
    r = make_records(keys, 1)[0]
    data = revision_1_bytes(r)
    back = record_from_bytes(data)
    assert back.ledger is None and back.event_id == r.event_id and back.facts == r.facts
    assert back.record_hash == data[-32:]


def test_a_body_with_bytes_left_over_after_the_appended_fields_is_corrupt(keys):
    r = make_records(keys, 1)[0]
    body = encode_body(r) + b"\x00"
    data = encode_head(r.chain_id, 0, ChainHead.genesis(r.chain_id).head_hash, len(body)) + body
    data += hash_record_bytes(data)
    with pytest.raises(TrailCorruption):
        record_from_bytes(data)


def test_segment_headers_of_revision_1_are_readable_and_others_are_not(monkeypatch):
    from auditor.trail import segment

    _parse_header(header_bytes(0, b"s" * 16))
    v1 = json.dumps(json.loads(schema_path("audit_record.1.avsc").read_text()), separators=(",", ":")).encode()
    segment._readable_schemas()  # computed from the real files before the writer is made to write revision 1
    monkeypatch.setattr(segment, "_schema_bytes", lambda: v1)
    old = header_bytes(0, b"s" * 16)
    _parse_header(old)
    with pytest.raises(ValueError, match="not the audit record schema"):
        _parse_header(old.replace(b"REJECTION", b"REJECTIOM"))


# ---------------------------------------------------------------- revision 3: organisation, request reference

def test_a_record_keeps_the_actors_organisation_and_the_request_reference(keys):
    e = make_event(1, random.Random(3))
    e = replace(e, actor=replace(e.actor, organisation=ActorOrganisation.PROCESSOR),
                legal_request=LegalRequest(LegalRequestType.COURT_ORDER, "HC-2024-0042"))
    r = build_record(e, make_decision(e), SourceRef.kafka("events", 0, 1), keys.pseudonymizer, "i-1", T0)
    assert (r.actor_organisation, r.legal_request_reference) == (ActorOrganisation.PROCESSOR, "HC-2024-0042")
    data, _ = seal_bytes(ChainHead.genesis(r.chain_id), r)
    back = record_from_bytes(data)
    assert back.actor_organisation is ActorOrganisation.PROCESSOR and back.legal_request_reference == "HC-2024-0042"
    m = fastavro.schemaless_reader(io.BytesIO(data), record_schema(), None)
    assert (m["actor_organisation"], m["legal_request_reference"]) == ("PROCESSOR", "HC-2024-0042")
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, record_schema(), m)
    assert buf.getvalue() == data
    again = record_to_event(back)
    assert again.actor.organisation is ActorOrganisation.PROCESSOR
    assert again.legal_request == LegalRequest(LegalRequestType.COURT_ORDER, "HC-2024-0042")


def test_a_long_request_reference_is_cut_like_every_text_fact(keys):
    e = make_event(1, random.Random(3))
    e = replace(e, legal_request=LegalRequest(LegalRequestType.SUBPOENA, "R" * (MAX_TEXT + 10)))
    r = build_record(e, make_decision(e), SourceRef.kafka("events", 0, 1), keys.pseudonymizer, "i-1", T0)
    assert r.legal_request_reference.startswith("R" * 256 + "…[cut: 1034 chars, sha256:")


@pytest.mark.parametrize("revision", [1, 2])
def test_records_of_earlier_revisions_read_the_new_facts_as_not_recorded(keys, revision):
    r = make_records(keys, 1)[0]
    if revision == 2:
        r = r._replace(record_type=RecordType.CORRECTION, ledger=LEDGER)
    assert r.actor_organisation is ActorOrganisation.UNKNOWN  # the current revision stores even "unknown"
    data = revision_bytes(r, revision)
    back = record_from_bytes(data)
    assert back.actor_organisation is None and back.legal_request_reference is None
    assert back.ledger == (LEDGER if revision == 2 else None) and back.facts == r.facts
    assert record_to_event(back).actor.organisation is ActorOrganisation.UNKNOWN


def test_a_body_that_ends_inside_a_revision_is_corrupt(keys):
    r = make_records(keys, 1)[0]
    body = encode_body(r)
    assert body.endswith(b"\x02\x0eUNKNOWN\x00")  # organisation, then no reference
    body = body[:-1]  # revision 3 has both fields or neither
    data = encode_head(r.chain_id, 0, ChainHead.genesis(r.chain_id).head_hash, len(body)) + body
    data += hash_record_bytes(data)
    with pytest.raises(TrailCorruption):
        record_from_bytes(data)


def test_segment_headers_of_revision_2_are_readable(monkeypatch):
    from auditor.trail import segment

    v2 = json.dumps(json.loads(schema_path("audit_record.2.avsc").read_text()), separators=(",", ":")).encode()
    assert v2 != segment._schema_bytes()
    segment._readable_schemas()
    monkeypatch.setattr(segment, "_schema_bytes", lambda: v2)
    _parse_header(header_bytes(0, b"s" * 16))
