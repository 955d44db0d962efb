"""Dead letters keep the original and carry Kafka Connect's headers; no rejection message or header
quotes a payload value; every output fits its topic's budget."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import fastavro
import pytest
from streamkit import NOW, TOPIC, StubMessage, compliant, messages, processor, violating, wire

from auditor.events.codec import event_to_mapping, raw_event_schema
from auditor.stream.budget import (
    CONNECT,
    MIN_BUDGET,
    OutputBudget,
    budget_of,
    message_size,
)
from auditor.trail.canonical import record_from_bytes
from auditor.trail.record import MAX_TEXT, RecordType

SENTINEL = "SeNtInEl7q"


def _dlq(result):
    (dlq,) = [o for o in result.outgoing if o.topic == "dead-letter"]
    return dlq


def test_dead_letter_keeps_the_original_key_value_and_headers_and_adds_connect_headers():
    raw = b"not avro at all"
    msg = StubMessage(TOPIC, 2, 9, raw, b"the-key", (("trace-id", b"abc"), ("empty", None)))
    result = processor().process([msg])
    dlq = _dlq(result)
    (record,) = result.records
    assert (dlq.key, dlq.value) == (b"the-key", raw)
    headers = list(dlq.headers)
    assert headers[:2] == [("trace-id", b"abc"), ("empty", None)]
    h = dict(headers)
    assert h[CONNECT + "topic"] == TOPIC.encode()
    assert h[CONNECT + "partition"] == b"2" and h[CONNECT + "offset"] == b"9"
    assert h[CONNECT + "exception.class.name"] == b"auditor.errors.DecodeError"
    assert h[CONNECT + "exception.message"].decode() == record.rejection.message
    assert h[CONNECT + "stage"] == b"DECODE"
    assert h["__connect.errors.connector.name"] == b"auditor"
    assert h["auditor.error.reason"] == b"undecodable" and h["auditor.trail.seq"] == b"0"


def test_an_input_header_named_like_ours_is_not_passed_on_as_ours():
    msg = StubMessage(TOPIC, 0, 0, b"junk", None, (("auditor.error.reason", b"forged"),
                                                   (CONNECT + "topic", b"forged")))
    dlq = _dlq(processor().process([msg]))
    assert [v for k, v in dlq.headers if k == "auditor.error.reason"] == [b"undecodable"]
    assert [v for k, v in dlq.headers if k == CONNECT + "topic"] == [TOPIC.encode()]


# ---------------------------------------------------------------- no payload values

def _bundled(datum: dict) -> bytes:
    if not isinstance(datum["occurred_at"], int):
        datum = dict(datum, occurred_at=int(datum["occurred_at"].timestamp() * 10**6))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, raw_event_schema(), datum)
    return wire(compliant())[:10] + buf.getvalue()


def _poison_values() -> list[tuple[str, bytes]]:
    base = event_to_mapping(compliant())
    cases: list[tuple[str, bytes]] = []

    def with_(name: str, **changes) -> None:
        d = json.loads(json.dumps(base, default=str))
        d["occurred_at"] = int(base["occurred_at"].timestamp() * 10**6)
        for path, value in changes.items():
            node = d
            keys = path.split("__")
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
        cases.append((name, _bundled(d)))

    with_("unknown policy", policy_id=f"{SENTINEL}-pack")
    with_("age out of range", subject__age=1000 + len(SENTINEL))
    with_("empty event id with sentinels elsewhere", event_id="", purpose=SENTINEL)
    with_("time out of range", occurred_at=253402300800 * 10**6 + 7, purpose=SENTINEL)
    with_("recipient on an access", recipient={"type": SENTINEL, "id": SENTINEL, "country": None,
                                              "on_our_behalf": None})
    cases.append(("garbage", SENTINEL.encode() * 3))
    cases.append(("oversize", wire(compliant())[:10] + SENTINEL.encode() * 30000))
    cases.append(("trailing bytes", wire(compliant()) + SENTINEL.encode()))
    return cases


@pytest.mark.parametrize("name, value", _poison_values(), ids=[c[0] for c in _poison_values()])
def test_rejection_messages_and_dead_letter_headers_never_quote_payload_values(name, value):
    result = processor().process(messages([value]))
    (record,) = result.records
    assert record.record_type is RecordType.REJECTION and record.rejection is not None
    assert SENTINEL not in record.rejection.message and SENTINEL not in record.rejection.reason
    assert str(1000 + len(SENTINEL)) not in record.rejection.message
    dlq = _dlq(result)
    for k, v in dlq.headers:
        assert SENTINEL.encode() not in (v or b""), f"header {k} quotes the payload"


def test_an_unknown_policy_is_named_by_the_packs_loaded_not_by_the_value():
    d = event_to_mapping(compliant())
    d["policy_id"] = "u-secret-policy"
    (record,) = processor().process(messages([_bundled(d)])).records
    assert record.rejection is not None and record.rejection.reason == "unknown_policy"
    assert "u-secret-policy" not in record.rejection.message and "ipasar" in record.rejection.message


# ---------------------------------------------------------------- budgets

def test_budget_leaves_room_for_framing_and_compression():
    assert budget_of(1_048_588) < 1_048_588 - 5000
    stock = OutputBudget.stock()
    assert stock.dead_letter == budget_of(1_000_000)
    assert OutputBudget.from_limits(2_000_000, 50_000, 3_000_000, 1_500_000) == OutputBudget(
        budget_of(1_500_000), budget_of(50_000), budget_of(1_500_000))


def test_a_dead_letter_over_budget_carries_a_reference_instead_of_the_bytes():
    raw = b"\xc3\x01" + b"z" * 300_000  # over the 256 KiB gate: oversize
    p = processor()
    p.budget = OutputBudget(1_000_000, 1_000_000, 100_000)
    msg = StubMessage(TOPIC, 1, 42, raw, b"k", (("trace-id", b"abc"),))
    result = p.process([msg])
    dlq = _dlq(result)
    assert message_size(dlq.value, dlq.key, dlq.headers) <= 100_000
    ref = json.loads(dlq.value)
    assert ref["sha256"] == hashlib.sha256(raw).hexdigest() and ref["bytes"] == len(raw)
    assert (ref["topic"], ref["partition"], ref["offset"]) == (TOPIC, 1, 42)
    h = dict(dlq.headers)
    assert h["auditor.original.omitted"] == b"value" and h["auditor.error.reason"] == b"oversize"
    assert dlq.key == b"k" and h["trace-id"] == b"abc"
    (record,) = result.records
    assert record.input_digest == hashlib.sha256(raw).digest()


def test_a_dead_letter_whose_key_and_headers_alone_are_over_budget_leaves_them_out():
    p = processor()
    p.budget = OutputBudget(1_000_000, 1_000_000, MIN_BUDGET)
    msg = StubMessage(TOPIC, 0, 0, b"junk", b"k" * MIN_BUDGET, (("big", b"h" * MIN_BUDGET),))
    dlq = _dlq(p.process([msg]))
    assert dlq.key is None and "big" not in dict(dlq.headers)
    assert dict(dlq.headers)["auditor.original.omitted"] == b"value,key,headers"
    assert message_size(dlq.value, dlq.key, dlq.headers) <= MIN_BUDGET


def _long_role(event, n: int):
    return dataclasses.replace(event, actor=dataclasses.replace(event.actor, role="R" * n))


def test_a_long_role_is_cut_with_its_digest_in_the_record_and_in_every_reason():
    event = _long_role(violating("inper", 1), 261_000)
    result = processor().process(messages([wire(event)]))
    (record,) = result.records
    assert record.record_type is RecordType.DECISION and record.facts is not None
    role = record.facts.actor_role
    assert role is not None and len(role) < 400
    assert role.startswith("R" * 256) and hashlib.sha256(b"R" * 261_000).hexdigest() in role
    assert "261000 chars" in role
    assert record.decision is not None and record.decision.violations
    for v in record.decision.violations:
        assert len(v.reason) <= 4096 and "R" * MAX_TEXT not in v.reason.upper()
    audit = [o for o in result.outgoing if o.topic == "audit"]
    assert sum(len(o.value) for o in audit) < 20_000
    (violation,) = [o for o in result.outgoing if o.topic == "violations"]
    assert len(violation.value) < 20_000 and "r" * MAX_TEXT not in violation.value.decode().lower()


def test_a_record_over_the_audit_budget_becomes_a_rejection_and_the_batch_goes_on():
    big = dataclasses.replace(compliant("ipasar", 0, event_id="big"),
                              data_categories=tuple(f"category-{i:06d}" for i in range(12_000)))
    values = [wire(compliant("ipasar", 1)), wire(big), wire(compliant("ipasar", 2))]
    p = processor()
    p.decoder.max_bytes = 1024 * 1024
    p.budget = OutputBudget(64 * 1024, 64 * 1024, 1_000_000)
    result = p.process(messages(values))
    kinds = [r.record_type for r in result.records]
    assert kinds == [RecordType.DECISION, RecordType.REJECTION, RecordType.DECISION]
    assert [r.seq for r in result.records] == [0, 1, 2]
    assert result.dead_letters == ["record_too_large"]
    for o in result.outgoing:
        if o.topic == "audit":
            assert len(o.value) <= 64 * 1024
            assert record_from_bytes(o.value).processed_at == NOW


def test_a_violation_message_over_its_budget_keeps_the_rule_ids_and_the_trail_place():
    p = processor()
    p.budget = OutputBudget(1_000_000, 400, 1_000_000)
    result = p.process(messages([wire(violating("ipmart", 1))]))
    (v,) = [o for o in result.outgoing if o.topic == "violations"]
    doc = json.loads(v.value)
    assert doc["truncated"] is True and doc["violations"] and all("rule" in x for x in doc["violations"])
    assert doc["seq"] == 0 and doc["record_hash"] == result.records[0].record_hash.hex()


def test_an_input_the_broker_refuses_is_dead_lettered_by_reference_only():
    """What the runner's batch split calls for the one message whose outputs are refused."""
    raw = wire(compliant())
    msg = StubMessage(TOPIC, 1, 7, raw, b"k", (("trace-id", b"abc"),))
    result = processor().reject_unwritable(msg, "Broker: Message size too large")
    (record,) = result.records
    assert record.record_type is RecordType.REJECTION and record.rejection is not None
    assert record.rejection.reason == "unwritable" and record.input_digest == hashlib.sha256(raw).digest()
    dlq = _dlq(result)
    ref = json.loads(dlq.value)
    assert (ref["sha256"], ref["offset"], ref["partition"]) == (hashlib.sha256(raw).hexdigest(), 7, 1)
    h = dict(dlq.headers)
    assert dlq.key is None and "trace-id" not in h
    assert h["auditor.original.omitted"] == b"value,key,headers"
    assert h[CONNECT + "exception.class.name"] == b"auditor.errors.BrokerError"
    assert result.dead_letters == ["unwritable"]


def test_odd_input_headers_never_stop_the_dead_letter():
    odd = (("ok", b"1"), ("text", "v"), ("\udcff", b"lone surrogate name"), (b"bytes-name", b"x"), ("n", 5))
    msg = StubMessage(TOPIC, 0, 3, b"junk", None, odd)  # type: ignore[arg-type]
    dlq = _dlq(processor().process([msg]))
    names = [k for k, _ in dlq.headers]
    assert names[:2] == ["ok", "text"] and dict(dlq.headers)["text"] == b"v"
    assert "\udcff" not in names and "n" not in names and dict(dlq.headers)["auditor.trail.seq"] == b"0"
