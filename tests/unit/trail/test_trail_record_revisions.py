"""Audit record schema revisions: the ledger field appended in revision 2, read from records of
every revision (a body that ends after ``rejection`` was written by revision 1)."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from auditor.events.codec import schema_path
from auditor.trail import KeyRing
from auditor.trail.canonical import encode_body, encode_head, record_from_bytes, record_schema
from auditor.trail.chain import ChainHead, hash_record_bytes, seal_bytes
from auditor.trail.record import CorrectedRecord, LedgerFacts, LedgerRead, RecordType
from auditor.trail.segment import _parse_header, header_bytes
from tests.unit.trail.trailkit import make_records

LEDGER = LedgerFacts(3, 17, (LedgerRead("consent", "marketing", None, "acme", False, (4, 5)),
                             LedgerRead("birth_date", None, None, None, "2010-01-01", (2,))),
                     CorrectedRecord("events/3", 5, (9,)))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys")


def test_a_record_with_ledger_facts_round_trips_and_matches_fastavro(keys):
    r = make_records(keys, 1)[0]._replace(record_type=RecordType.CORRECTION, ledger=LEDGER)
    data, _ = seal_bytes(ChainHead.genesis(r.chain_id), r)
    back = record_from_bytes(data)
    assert back.ledger == LEDGER and back.record_type is RecordType.CORRECTION
    m = fastavro.schemaless_reader(io.BytesIO(data), record_schema(), None)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, record_schema(), m)
    assert buf.getvalue() == data


def revision_1_bytes(r) -> bytes:
    """``r`` as revision 1 wrote it: fastavro under audit_record.1.avsc."""
    v1 = fastavro.parse_schema(json.loads(schema_path("audit_record.1.avsc").read_text()))
    body = encode_body(r)[:-1]  # the null 'ledger' union index is the body's last byte
    head = encode_head(r.chain_id, 0, ChainHead.genesis(r.chain_id).head_hash, len(body))
    data = head + body
    data += hash_record_bytes(data)
    m = fastavro.schemaless_reader(io.BytesIO(data), v1, None)  # it is a valid revision-1 record
    assert m["chain_id"] == r.chain_id
    return data


def test_a_revision_1_record_still_decodes_with_no_ledger_facts(keys):
    r = make_records(keys, 1)[0]
    data = revision_1_bytes(r)
    back = record_from_bytes(data)
    assert back.ledger is None and back.event_id == r.event_id and back.facts == r.facts
    assert back.record_hash == data[-32:]


def test_a_body_with_bytes_left_over_after_the_appended_fields_is_corrupt(keys):
    from auditor.errors import TrailCorruption

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
