"""Investigator output: replay's jsonl, csv and table, and verify-proof, show every stored fact."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from trailkit import write_trail

from auditor.cli import main
from auditor.events.codec import schema_path
from auditor.events.model import (
    Actor,
    ActorOrganisation,
    ActorType,
    ConsentState,
    Event,
    EventKind,
    Identifiability,
    LegalRequest,
    LegalRequestType,
    Recipient,
    Safeguard,
    Subject,
    Transfer,
)
from auditor.policy.decision import Decision, RuleRef, Verdict, Violation, ViolationKind
from auditor.trail import ReplayFilter, SourceRef, TrailWriter, build_record, iter_records
from auditor.trail.canonical import record_to_bytes
from auditor.trail.render import (
    TableWriter,
    csv_columns,
    record_from_json,
    record_json,
    write_records,
)


def _schema() -> dict:
    return json.loads(schema_path("audit_record.avsc").read_text())


def _record_fields(node) -> dict[str, list]:
    """{field name: its type} of an Avro record node."""
    return {f["name"]: f["type"] for f in node["fields"]}


def _branches(kind) -> list:
    return kind if isinstance(kind, list) else [kind]


def _leaf_paths(node, prefix: str = "") -> list[str]:
    """Every leaf field of an Avro record node as a dotted path, in schema order (derived here from
    the schema, not from the module under test)."""
    out: list[str] = []
    for f in node["fields"]:
        nested = [b for b in _branches(f["type"]) if isinstance(b, dict) and b.get("type") == "record"]
        out += _leaf_paths(nested[0], f"{prefix}{f['name']}.") if nested else [prefix + f["name"]]
    return out


def _at(doc: dict, path: str):
    for key in path.split("."):
        doc = None if doc is None else doc[key]
    return doc


def _assert_keys_match(doc: dict, fields: dict[str, object], where: str) -> None:
    assert set(doc) == set(fields), (where, set(doc) ^ set(fields))
    for name, kind in fields.items():
        branches = kind if isinstance(kind, list) else [kind]
        for b in branches:
            if isinstance(b, dict) and b.get("type") == "record" and doc[name] is not None:
                _assert_keys_match(doc[name], _record_fields(b), f"{where}.{name}")
            if isinstance(b, dict) and b.get("type") == "array" and isinstance(b["items"], dict) \
                    and b["items"].get("type") == "record":
                for item in doc[name]:
                    _assert_keys_match(item, _record_fields(b["items"]), f"{where}.{name}[]")


FULL = Event(
    event_id="ev-full-0001", occurred_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    kind=EventKind.DISCLOSURE, policy_id="ipasar", source_system="crm-eu-7",
    actor=Actor(ActorType.CONTRACTOR, "emp-777", "collections-desk", ActorOrganisation.THIRD_PARTY),
    subject=Subject("u-full", age=16, is_minor=True, region="MY-10"),
    data_categories=("account_information", "location"), purpose="debt_collection",
    recipient=Recipient("bank", "acme-bank-sg-branch-000000000000000000000000001", "SG", False),
    identifiability=Identifiability.PSEUDONYMISED, legal_basis="contract-7b",
    legal_request=LegalRequest(LegalRequestType.COURT_ORDER, "case 42"),
    consent=ConsentState(marketing=True, third_party_sharing=True, guardian=True, marketing_opt_out=True),
    transfer=Transfer(True, "JP", Safeguard.STANDARD_CONTRACTUAL_CLAUSES),
    attributes={"channel": "branch-office", "ticket": "T-99"},
)
ALLOWED_ID = "ev-allowed-0002"
RULE = RuleRef("ipasar.disclose.bank-only-for-transactions", "3.2(b)", "quote", "critical")


@pytest.fixture(scope="module")
def trail(tmp_path_factory, keys):
    """A trail with every kind of record: the FULL event, ordinary ones and rejections."""
    path = tmp_path_factory.mktemp("t") / "trail"
    write_trail(path, keys, 60, partitions=2, checkpoint_every=20, reject_every=7)
    decision = Decision(FULL.event_id, Verdict.VIOLATION,
                        (Violation(RULE, ViolationKind.CONDITION_FAILED, "the purpose is debt collection"),),
                        None, "ipasar", "sha256:" + "cd" * 32)
    source = SourceRef.kafka("privacy-events-with-a-rather-long-topic-name", 11, 123456789)
    from auditor.trail.record import CorrectedRecord, LedgerFacts, LedgerRead

    ledger = LedgerFacts(0, 41, (LedgerRead("consent", "debt_collection", "bank", "acme-1", True, (3, 7)),
                                 LedgerRead("birth_date", None, None, None, "2008-02-29", (9,))),
                         CorrectedRecord("events/0", 2, (40,)))
    record = build_record(FULL, decision, source, keys.pseudonymizer, "auditor-eu-west-1a-instance-0",
                          datetime(2024, 5, 1, 12, 0, 1, 5, tzinfo=UTC), ledger=ledger)
    allowed = build_record(replace(FULL, event_id=ALLOWED_ID),
                           Decision(ALLOWED_ID, Verdict.ALLOW, (), RULE, "ipasar", "sha256:" + "cd" * 32),
                           SourceRef.from_file("events.jsonl", 7), keys.pseudonymizer, "auditor-offline",
                           datetime(2024, 5, 1, 12, 0, 2, tzinfo=UTC))
    with TrailWriter.open(path, keys, checkpoint_every=1, checkpoint_seconds=3600) as w:
        w.append([record, allowed])
        w.commit()
    return path


def _full(trail):
    return next(iter(iter_records(trail, ReplayFilter(event_id=FULL.event_id))))


def _allowed(trail):
    return next(iter(iter_records(trail, ReplayFilter(event_id=ALLOWED_ID))))


def test_the_full_record_gives_every_leaf_field_of_the_schema_a_value(trail):
    """The fixtures the other tests read: a field added to the schema fails here until FULL (or, for
    the rejection's fields, a rejection record) sets it, so the jsonl, csv, table and verify-proof
    tests below then check the new field too."""
    docs = [record_json(_full(trail)), record_json(_allowed(trail)),
            record_json(next(r for r in iter_records(trail) if r.rejection is not None))]
    unset = [path for path in _leaf_paths(_schema()) if all(_at(d, path) in (None, [], {}) for d in docs)]
    assert unset == []


def test_jsonl_has_exactly_the_schemas_keys_at_every_level(trail):
    records = list(iter_records(trail))
    assert {r.record_type.value for r in records} == {"DECISION", "REJECTION"}
    out = io.StringIO()
    assert write_records(records, out, "jsonl") == len(records)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    for row in rows:
        _assert_keys_match(row, _record_fields(_schema()), "record")
    full = next(r for r in rows if r["event_id"] == FULL.event_id)
    assert full == record_json(_full(trail))
    assert full["facts"]["recipient"]["on_our_behalf"] is False and full["actor_organisation"] == "THIRD_PARTY"


def test_jsonl_round_trips_every_field_to_the_records_own_bytes(trail):
    for r in iter_records(trail):
        doc = json.loads(json.dumps(record_json(r)))
        back = record_from_json(doc)
        assert back == r
        data = record_to_bytes(back)
        assert data == record_to_bytes(r) and data[-32:].hex() == doc["record_hash"]


def test_csv_has_one_column_per_schema_field_and_every_value(trail):
    records = [_full(trail), _allowed(trail), next(r for r in iter_records(trail) if r.rejection is not None)]
    out = io.StringIO()
    write_records(records, out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    paths = _leaf_paths(_schema())
    for r, row in zip(records, rows, strict=True):
        assert list(row) == paths == csv_columns()
        doc = record_json(r)
        for path in paths:
            value = _at(doc, path)
            if isinstance(value, (list, dict)):
                assert json.loads(row[path]) == value, path
            else:
                assert row[path] == ("" if value is None else str(value)), path


def _leaves(doc, out):
    for value in (doc.values() if isinstance(doc, dict) else doc):
        if isinstance(value, (dict, list)):
            _leaves(value, out)
        elif isinstance(value, str):
            out.append(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            out.append(str(value))
    return out


@pytest.mark.parametrize("width", [None, 200])
def test_table_shows_every_stored_fact_with_full_ids(trail, width):
    full = _full(trail)
    out = io.StringIO()
    table = TableWriter(out, width=width)
    table.add(full)
    table.flush()
    text = out.getvalue()
    doc = record_json(full)
    for value in _leaves({k: v for k, v in doc.items() if k != "body_len"}, []):
        if width is not None and " " in value:
            continue  # a narrow terminal wraps prose at spaces; ids and hashes stay whole
        if value.lower() in text.lower() or value.replace("_", " ").lower() in text.lower():
            continue
        pytest.fail(f"{value!r} is not in the table:\n{text}")
    f = full.facts
    assert f.subject_pseudonym in text and full.record_hash.hex() in text  # whole, on one line
    if width is None:
        assert "on our behalf no" in text and "minor yes" in text and "opted out yes" in text


def test_replay_filters_by_event_id_and_rejected(trail, capsys):
    assert main(["replay", str(trail), "--event-id", FULL.event_id, "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event_id"] for r in rows] == [FULL.event_id]
    assert main(["replay", str(trail), "--verdict", "REJECTED", "--format", "jsonl"]) == 0
    rejected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rejected and all(r["record_type"] == "REJECTION" and r["rejection"]["reason"] for r in rejected)
    assert main(["replay", str(trail), "--stats"]) == 0
    assert f"{len(rejected)}  REJECTED" in capsys.readouterr().out


def test_verify_proof_prints_every_stored_fact(trail, keys, tmp_path, capsys):
    full = _full(trail)
    proof = tmp_path / "p.json"
    assert main(["prove", str(trail), "--chain", full.chain_id, "--seq", str(full.seq), "--out", str(proof),
                 "--keys", str(keys.directory)]) == 0
    capsys.readouterr()
    assert main(["verify-proof", str(proof), "--keys", str(keys.directory)]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out[: out.rindex("}") + 1])
    _assert_keys_match(doc, _record_fields(_schema()), "record")
    assert doc == record_json(full)
