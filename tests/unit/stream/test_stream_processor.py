"""BatchProcessor without Kafka: stub messages in, routed outgoing messages and sealed records out."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import struct
import weakref

import pytest
from streamkit import (
    NOW,
    ROUTING,
    TOPIC,
    compliant,
    messages,
    packs,
    processor,
    seal_fails_for,
    violating,
    wire,
)

from auditor.errors import TransientError
from auditor.events.codec import event_to_mapping
from auditor.events.wire import SchemaAllowList, encode_confluent
from auditor.native import NativeEventDecoder
from auditor.policy import Verdict, evaluate
from auditor.stream.generate import MUTATIONS
from auditor.stream.processor import UNDECLARED, BatchProcessor, Outgoing
from auditor.trail.canonical import record_from_bytes
from auditor.trail.chain import ChainHead, genesis_hash, recompute_hash
from auditor.trail.keys import Pseudonymizer
from auditor.trail.record import RecordType


def by_topic(out: list[Outgoing], topic: str) -> list[Outgoing]:
    return [o for o in out if o.topic == topic]


def test_compliant_event_yields_one_audit_record_and_nothing_else():
    event = compliant()
    result = processor().process(messages([wire(event)], partition=4, first_offset=17))
    assert [o.topic for o in result.outgoing] == ["audit"]
    (audit,) = result.outgoing
    (record,) = result.records
    assert record.record_type is RecordType.DECISION and record.decision is not None
    assert record.decision.verdict is Verdict.ALLOW
    assert (record.source.topic, record.source.partition, record.source.offset) == (TOPIC, 4, 17)
    assert record.chain_id == f"{TOPIC}/4" and record.seq == 0
    assert audit.partition == 4 % ROUTING.audit_partitions and audit.key == record.chain_id.encode()
    assert result.audited == [(event.policy_id, event.kind.value, "ALLOW")]
    assert result.violations == [] and result.dead_letters == []
    assert result.occurred_at == [event.occurred_at.timestamp()]
    assert len(result.decision_seconds) == 1


def test_audit_message_value_is_the_sealed_record_in_canonical_bytes():
    result = processor().process(messages([wire(compliant())]))
    (audit,), (record,) = result.outgoing, result.records
    assert record_from_bytes(audit.value) == record
    assert recompute_hash(audit.value) == record.record_hash
    assert record.prev_hash == genesis_hash(record.chain_id)
    assert record.processed_at == NOW and record.instance_id == "unit-1"


def test_record_keeps_pseudonyms_not_identifiers():
    base = compliant()
    event = dataclasses.replace(base, subject=dataclasses.replace(base.subject, id="u-secret-42"))
    result = processor().process(messages([wire(event)]))
    (record,), (audit,) = result.records, result.outgoing
    assert record.facts is not None and record.facts.subject_pseudonym != event.subject.id
    assert b"u-secret-42" not in audit.value


def test_violation_is_audited_and_published_with_every_violated_rule():
    event = violating("inper", 3)
    expected = evaluate(event, packs()["inper"])
    assert expected.verdict is Verdict.VIOLATION
    result = processor().process(messages([wire(event)], partition=1))
    (record,) = result.records
    (v,) = by_topic(result.outgoing, "violations")
    doc = json.loads(v.value)
    assert v.key == event.event_id.encode() and v.partition is None
    assert doc["event_id"] == event.event_id and doc["verdict"] == "VIOLATION"
    assert [x["rule"] for x in doc["violations"]] == list(expected.violated_rule_ids)
    assert (doc["chain_id"], doc["seq"], doc["record_hash"]) == (record.chain_id, record.seq,
                                                                 record.record_hash.hex())
    assert doc["source"] == f"{TOPIC}/1@0"
    assert record.decision is not None and record.decision.rule_ids == expected.violated_rule_ids
    assert len(result.violations) == len(expected.violations)


def test_violation_labels_fold_an_undeclared_purpose():
    event = MUTATIONS["undeclared_purpose"](compliant("ipmart"))
    event = dataclasses.replace(event, event_id="undeclared-1")
    assert evaluate(event, packs()["ipmart"]).verdict is Verdict.VIOLATION
    result = processor().process(messages([wire(event)]))
    assert result.violations and all(labels[4] == UNDECLARED for labels in result.violations)


def test_malformed_input_leaves_a_rejection_record_and_a_dead_letter_with_headers():
    raw = b"not avro at all"
    result = processor().process(messages([raw], partition=2, first_offset=9))
    (record,) = result.records
    assert record.record_type is RecordType.REJECTION and record.rejection is not None
    assert record.rejection.reason == "undecodable"
    assert record.input_digest == hashlib.sha256(raw).digest()
    assert (record.chain_id, record.seq) == (f"{TOPIC}/2", 0)
    (dlq,) = by_topic(result.outgoing, "dead-letter")
    assert dlq.value == raw and dlq.key is None
    headers = dict(dlq.headers)
    assert headers["auditor.source.topic"] == TOPIC.encode()
    assert headers["auditor.source.partition"] == b"2"
    assert headers["auditor.source.offset"] == b"9"
    assert headers["auditor.error.class"] == b"DecodeError"
    assert headers["auditor.error.reason"] == b"undecodable"
    assert headers["auditor.error.message"].decode() == record.rejection.message
    assert headers["auditor.trail.chain"] == record.chain_id.encode() and headers["auditor.trail.seq"] == b"0"
    assert result.dead_letters == ["undecodable"]
    assert len(by_topic(result.outgoing, "audit")) == 1


def test_tombstone_is_dead_lettered_with_an_empty_value():
    result = processor().process(messages([None]))
    (record,) = result.records
    assert record.rejection is not None and "tombstone" in record.rejection.message
    assert record.input_digest == hashlib.sha256(b"").digest()
    assert by_topic(result.outgoing, "dead-letter")[0].value == b""


def test_unknown_schema_is_dead_lettered_as_schema_error():
    body = wire(compliant())[10:]
    result = processor().process(messages([b"\x00" + struct.pack(">I", 404) + body]))
    (dlq,) = by_topic(result.outgoing, "dead-letter")
    headers = dict(dlq.headers)
    assert headers["auditor.error.class"] == b"SchemaError"
    assert headers["auditor.error.reason"] == b"unknown_schema"


def test_event_naming_a_pack_that_is_not_loaded_is_rejected():
    event = dataclasses.replace(compliant(), policy_id="nosuchpack")
    result = processor().process(messages([wire(event)]))
    assert result.dead_letters == ["unknown_policy"]
    assert result.records[0].record_type is RecordType.REJECTION


def test_each_source_partition_is_its_own_contiguous_chain_in_offset_order():
    batch = []
    for i in range(30):
        value = wire(compliant("waimaotong", i)) if i % 7 else b"garbage"
        batch.append(messages([value], partition=i % 4, first_offset=100 + i)[0])
    result = processor().process(batch)
    assert len(result.records) == 30 and len(by_topic(result.outgoing, "audit")) == 30
    chains: dict[str, list] = {}
    for r in result.records:
        chains.setdefault(r.chain_id, []).append(r)
    assert sorted(chains) == [f"{TOPIC}/{p}" for p in range(4)]
    for chain_id, records in chains.items():
        assert [r.seq for r in records] == list(range(len(records)))
        offsets = [r.source.offset for r in records]
        assert offsets == sorted(offsets)
        prev = genesis_hash(chain_id)
        for r in records:
            assert r.prev_hash == prev
            prev = r.record_hash


def test_discarded_batch_is_resealed_identically():
    p = processor()
    batch = messages([wire(compliant("ipasar", i)) for i in range(5)])
    first = p.process(batch)
    p.discard_heads()
    again = p.process(batch)
    assert [o.value for o in again.outgoing] == [o.value for o in first.outgoing]


def test_committed_heads_continue_the_chain_in_the_next_batch():
    p = processor()
    first = p.process(messages([wire(compliant("ipasar", i)) for i in range(3)]))
    p.commit_heads()
    second = p.process(messages([wire(compliant("ipasar", 9))], first_offset=3))
    (r,) = second.records
    assert r.seq == 3 and r.prev_hash == first.records[-1].record_hash


def test_restored_head_is_continued():
    p = processor()
    head = ChainHead(f"{TOPIC}/0", 41, b"\x07" * 32)
    p.set_head(head.chain_id, head)
    (r,) = p.process(messages([wire(compliant())], first_offset=500)).records
    assert (r.seq, r.prev_hash) == (41, head.head_hash)


def test_new_chain_starts_at_genesis_and_forget_drops_a_chain():
    p = processor()
    p.set_head(f"{TOPIC}/0", None)
    p.process(messages([wire(compliant())]))
    p.commit_heads()
    p.forget([f"{TOPIC}/0"])
    (r,) = p.process(messages([wire(compliant())], first_offset=1)).records
    assert (r.seq, r.prev_hash) == (0, genesis_hash(f"{TOPIC}/0"))


def test_registry_outage_raises_transient_error_and_dead_letters_nothing():
    calls = []

    def down(url: str) -> bytes:
        calls.append(url)
        raise TransientError("schema registry unreachable")

    p = processor(SchemaAllowList(registry_url="http://127.0.0.1:9", fetch=down))
    confluent = encode_confluent(event_to_mapping(compliant()), 77)
    batch = messages([wire(compliant("ipasar", 1)), confluent, wire(compliant("ipasar", 2))])
    with pytest.raises(TransientError):
        p.process(batch)
    assert calls == ["http://127.0.0.1:9/schemas/ids/77"]
    p.discard_heads()  # what the runner does before rewinding the batch
    assert p.heads == {}
    # the dependency recovers: the retried batch is audited from the same chain position
    p.decoder.allow.by_id[77] = p.decoder.allow.by_fp[p.decoder.allow.reader_fp]
    result = p.process(batch)
    assert [r.seq for r in result.records] == [0, 1, 2] and result.dead_letters == []


def _no_garbage_left(p: BatchProcessor, values: list[bytes | None]) -> None:
    """The batch's result, and everything in it, is freed as soon as the last reference goes (no cycle
    left for the garbage collector: a kept batch costs a collection that walks every object in it)."""
    gc.disable()
    try:
        result = p.process(messages(values))
        assert result.dead_letters  # a refused message is in the batch
        freed = weakref.ref(result)
        del result
        assert freed() is None, [type(r).__name__ for r in gc.get_referrers(freed())]
    finally:
        gc.enable()


_REFUSED = [wire(compliant()), b"not avro at all", None, wire(dataclasses.replace(compliant(), policy_id="nosuchpack"))]


def test_a_batch_with_refused_messages_leaves_no_reference_cycle():
    _no_garbage_left(processor(), _REFUSED)


def test_a_batch_with_refused_messages_leaves_no_reference_cycle_on_the_compiled_path():
    _no_garbage_left(BatchProcessor(NativeEventDecoder(), packs(), Pseudonymizer(b"k" * 32), ROUTING, "unit-1",
                                    clock=lambda: NOW), _REFUSED)


def test_decoder_and_sealer_faults_leave_no_reference_cycle(monkeypatch: pytest.MonkeyPatch):
    p = processor()
    real = p.decoder.decode

    def decode(value: bytes | None):
        if value is not None and b"poison" in value:
            raise RuntimeError("decoder bug")
        return real(value)

    p.decoder.decode = decode  # type: ignore[method-assign]
    _no_garbage_left(p, [wire(compliant()), wire(compliant(event_id="poison"))])
    seal_fails_for(monkeypatch, "sealpoison")
    _no_garbage_left(processor(), [wire(compliant()), wire(compliant(event_id="sealpoison"))])
