"""The daemon's processor on the compiled hot path (``native: true``) against the Python reference
(``native: false``): the same input gives the same audit records, byte for byte, the same
violations and dead letters; every refused input gets the same reason; one message's failure in
a batch call is still that message's alone."""

from __future__ import annotations

import io
import random
import sys
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import NOW, PACK_IDS, messages, packs, processor, violating, wire

from auditor.config import load_config
from auditor.events.codec import event_from_mapping, event_to_mapping, iter_json_lines
from auditor.events.wire import (
    SINGLE_OBJECT_MAGIC,
    EventDecoder,
    SchemaAllowList,
    encode_single_object,
)
from auditor.native import NativeEventDecoder, NativeSealer, canonical_event
from auditor.stream.budget import OutputBudget
from auditor.stream.generate import stream
from auditor.stream.hotpath import NativePath, PythonPath
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.canonical import record_from_bytes
from auditor.trail.keys import Pseudonymizer
from auditor.trail.record import RecordType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "native"))
from hostilekit import GOOD, GOOD_VALUE  # noqa: E402
from hostilekit import HOSTILE as CODEC_HOSTILE  # noqa: E402
from nativekit import PARSED_RAW, RAW_EVENT_SCHEMA, blocked, datums, plain, sort_maps  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (ROOT / "tests/data/events").glob("*.jsonl") if p.name != "malformed.jsonl")


def pair(allow: SchemaAllowList | None = None) -> tuple[BatchProcessor, BatchProcessor]:
    """The same processor twice: the Python reference and the compiled hot path."""
    reference = processor(allow)
    native = BatchProcessor(NativeEventDecoder(allow), packs(), Pseudonymizer(b"k" * 32), reference.routing,
                            "unit-1", clock=lambda: NOW, sealer=NativeSealer())
    assert isinstance(reference.hot, PythonPath) and isinstance(native.hot, NativePath)
    return reference, native


def outputs(result: BatchResult) -> tuple[Any, ...]:
    return (result.outgoing, [(seq, prev, h) for _, seq, prev, h in result.sealed], result.audited,
            result.violations, result.dead_letters, result.occurred_at)


def same_outputs(values: list[bytes | None], batch: int = 100, partitions: int = 3) -> list[BatchResult]:
    """Both paths over the values (spread over partitions, in batches, heads committed in
    between); asserts every output is equal and returns the reference's results. Some of the
    native path's records come from the facts tuple (the memo knew the decision)."""
    reference, native = pair()
    results = []
    for start in range(0, len(values), batch):
        chunk = values[start:start + batch]
        for part in range(partitions):
            msgs = messages(chunk[part::partitions], partition=part, first_offset=start)
            a, b = reference.process(msgs), native.process(msgs)
            assert outputs(b) == outputs(a)
            reference.commit_heads()
            native.commit_heads()
            results.append(a)
    assert reference.heads == native.heads
    assert native.facts is not None and native.facts.hits > len(values) // 10
    return results


def example_values() -> list[bytes | None]:
    events = [d.event for f in EXAMPLES for d in iter_json_lines(f)]
    assert len(events) > 200 and all(e is not None for e in events)
    return [encode_single_object(event_to_mapping(e)) for e in events if e is not None]


# ---------------------------------------------------------------- the same records

def test_every_example_event_gives_the_same_records_violations_and_heads():
    values = example_values()
    results = same_outputs(values + values)  # the second time round the memo knows most of them
    records = [record_from_bytes(o.value) for r in results for o in r.outgoing if o.topic == "audit"]
    assert len(records) > 200 and all(r.record_type is RecordType.DECISION for r in records)
    assert sum(len(r.violations) for r in results) > 20  # violations are compared too


def test_generated_streams_give_the_same_outputs():
    # the bench's stream: mostly compliant, violations of every kind, now and then malformed bytes
    events = islice(stream(list(packs().values()), seed=3, malformed_rate=0.03,
                           clock=lambda: datetime(2026, 4, 1, tzinfo=UTC)), 1500)
    values = [e if isinstance(e, bytes) else wire(e) for e in events]
    results = same_outputs(values, batch=500)
    assert sum(len(r.dead_letters) for r in results) > 10


def test_a_record_over_the_audit_budget_is_rejected_in_the_same_place():
    values = [wire(violating(pack, i)) for pack in PACK_IDS for i in range(4)]
    reference, native = pair()
    for p in (reference, native):
        p.budget = OutputBudget(audit=900, violations=p.budget.violations, dead_letter=p.budget.dead_letter)
    a, b = reference.process(messages(values)), native.process(messages(values))
    assert outputs(b) == outputs(a)
    assert 0 < a.dead_letters.count("record_too_large") < len(values)  # some fit, some do not


def test_the_fact_path_reads_the_memo_key_the_engine_reads_from_the_event():
    # every example event: the key the fact path reads from the tuple is the engine's key_of(event)
    _, native = pair()
    assert native.facts is not None
    values = example_values()
    native.process(messages(values))  # fills the plans
    decoder = native.decoder
    assert isinstance(decoder, NativeEventDecoder)
    checked = 0
    for value, facts, decoded in zip(values, decoder.decode_facts(values), decoder.decode_events(values), strict=True):
        assert not isinstance(decoded, Exception) and hasattr(facts, "facts"), value
        event = decoded.event
        compiled = native.evaluators[event.policy_id].compiled
        plan = compiled.plan(event)
        if plan.key_of is None:
            continue
        key_of = native.facts._key_of(plan.key_of, compiled.pack.minor_age)
        assert key_of is not None
        assert key_of(facts.facts) == plan.key_of(event), event.event_id
        checked += 1
    assert checked > 200


def test_violations_the_memo_knows_take_the_fact_path_with_the_same_message():
    reference, native = pair()
    assert native.facts is not None
    values = [wire(violating("ipasar", i)) for i in range(3)]
    first = [reference.process(messages(values)), native.process(messages(values))]
    native.commit_heads()
    reference.commit_heads()
    before = native.facts.hits  # (the compiled packs, and so their memo, are shared by the tests)
    again = messages(values, first_offset=3)
    b, a = native.process(again), reference.process(again)
    assert native.facts.hits > before and len(b.violations) >= 3  # (an undeclared purpose is never memoised)
    assert outputs(b) == outputs(a) and outputs(first[0]) == outputs(first[1])


# ---------------------------------------------------------------- refused inputs

HOSTILE: dict[str, bytes | None] = {
    **CODEC_HOSTILE,
    "access-with-recipient": encode_single_object({**event_to_mapping(event_from_mapping(GOOD)), "kind": "ACCESS"}),
    "unknown-policy": encode_single_object({**event_to_mapping(event_from_mapping(GOOD)), "policy_id": "nope"}),
}


def rejections(result: BatchResult) -> list[tuple[Any, ...]]:
    """Per record: its type, rejection reason, input digest, source (the message text may differ:
    the compiled decoder names the field it refused)."""
    out = []
    for record, seq, _, _ in result.sealed:
        rej = record.rejection
        out.append((seq, record.record_type, rej.reason if rej else None, record.input_digest, record.source))
    return out


def dead_letter_headers(result: BatchResult) -> list[dict[str, bytes | None]]:
    return [{k: v for k, v in o.headers if not k.endswith(".message")}
            for o in result.outgoing if o.topic == "dead-letter"]


def test_every_hostile_input_gets_the_same_reason_and_dead_letter():
    values = list(HOSTILE.values())
    reference, native = pair()
    a, b = reference.process(messages(values)), native.process(messages(values))
    assert rejections(b) == rejections(a)
    assert dead_letter_headers(b) == dead_letter_headers(a)
    assert [o.value for o in b.outgoing if o.topic == "dead-letter"] == \
        [o.value for o in a.outgoing if o.topic == "dead-letter"]
    assert b.dead_letters == a.dead_letters and len(a.dead_letters) == len(values)
    assert set(a.dead_letters) >= {"undecodable", "oversize", "unknown_schema", "hostile_encoding", "bad_field",
                                   "unknown_policy"}


def test_refused_and_accepted_inputs_interleaved_keep_their_places():
    good = example_values()[:40]
    values: list[bytes | None] = []
    for i, hostile in enumerate(HOSTILE.values()):
        values += [good[i], hostile]
    reference, native = pair()
    a, b = reference.process(messages(values)), native.process(messages(values))
    assert rejections(b) == rejections(a)
    assert [r.record_type for r in b.records] == [r.record_type for r in a.records]


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(datums(RAW_EVENT_SCHEMA), st.sampled_from(PACK_IDS), st.integers(0, 3))
def test_generated_datums_get_the_same_records_or_the_same_reason(datum, pack, cut):
    # any datum the schema allows (most are refused by the event's own checks), its map keys in
    # order (the reference digests the order received), sometimes cut short or with a trailing byte
    datum = sort_maps(RAW_EVENT_SCHEMA, {**datum, "policy_id": pack})
    value = SINGLE_OBJECT_MAGIC + SchemaAllowList().reader_fp + plain(datum, PARSED_RAW)
    value = {0: value, 1: value, 2: value[:-1], 3: value + b"\x00"}[cut]
    reference, native = pair()
    a, b = reference.process(messages([value])), native.process(messages([value]))
    assert rejections(b) == rejections(a)
    if not a.dead_letters:
        assert outputs(b) == outputs(a)


# ---------------------------------------------------------------- where the two differ on purpose

def test_blocked_arrays_and_maps_are_audited_natively_and_refused_by_the_reference():
    datum = sort_maps(RAW_EVENT_SCHEMA, fastavro.schemaless_reader(io.BytesIO(GOOD_VALUE[10:]), PARSED_RAW, None))
    datum["attributes"] = {"a": "1", "b": "2", "c": "3"}
    datum["data_categories"] = ["account_information", "transaction_history"]
    rng = random.Random(5)
    value = b""
    while value == b"" or value[10:] == plain(datum):
        value = SINGLE_OBJECT_MAGIC + SchemaAllowList().reader_fp + blocked(RAW_EVENT_SCHEMA, datum, rng)
    reference, native = pair()
    assert reference.process(messages([value])).dead_letters == ["hostile_encoding"]
    (record,) = native.process(messages([value])).records
    assert record.record_type is RecordType.DECISION
    event = EventDecoder().decode(SINGLE_OBJECT_MAGIC + SchemaAllowList().reader_fp + plain(datum)).event
    assert record.input_digest == canonical_event(event)[1]  # the digest of its canonical form


def test_the_map_order_received_changes_no_digest_on_either_path():
    # the reference digested the order received (a generated stream's records differed with
    # native on and off) until its canonical form sorted map keys as the compiled one does
    attrs = {"b": "2", "a": "1", "ä": "3", "B": "4"}
    mapping = event_to_mapping(event_from_mapping(GOOD))
    forward = encode_single_object({**mapping, "attributes": attrs})
    backward = encode_single_object({**mapping, "attributes": dict(reversed(attrs.items()))})
    reference, native = pair()
    ref = [r.input_digest for r in reference.process(messages([forward, backward])).records]
    nat = [r.input_digest for r in native.process(messages([forward, backward])).records]
    assert ref[0] == ref[1] == nat[0] == nat[1] == canonical_event(event_from_mapping(GOOD | {"attributes": attrs}))[1]


# ---------------------------------------------------------------- one message's failure stays its own

class _Boom(RuntimeError):
    pass


def test_a_native_decoder_fault_on_one_message_dead_letters_only_that_one(monkeypatch: pytest.MonkeyPatch):
    _, native = pair()
    native.facts = None  # every message through decode_events (the memo, shared by the tests, knows some)
    decoder = native.decoder
    assert isinstance(decoder, NativeEventDecoder)
    real = decoder.decode_events
    calls = []

    def decode_events(values):
        values = list(values)
        calls.append(len(values))
        if any(v is not None and b"poison" in v for v in values):
            raise _Boom("a bug in the batch call")
        return real(values)

    monkeypatch.setattr(decoder, "decode_events", decode_events)
    values = [wire(violating("ipasar", i)) for i in range(4)]
    values[2] = wire(violating("ipasar", 0, event_id="poison"))
    result = native.process(messages(values))
    assert calls == [4, 1, 1, 1, 1]  # the batch, then one by one
    assert [r.record_type for r in result.records] == [RecordType.DECISION] * 2 + [RecordType.REJECTION,
                                                                                 RecordType.DECISION]
    assert result.dead_letters == ["decode_failed"] and [r.seq for r in result.records] == [0, 1, 2, 3]


def test_a_facts_decoder_fault_sends_the_batch_the_full_way(monkeypatch: pytest.MonkeyPatch):
    reference, native = pair()
    decoder = native.decoder
    assert isinstance(decoder, NativeEventDecoder) and native.facts is not None

    def decode_facts(values):
        raise _Boom("a bug in the batch call")

    monkeypatch.setattr(decoder, "decode_facts", decode_facts)
    values = example_values()[:50]
    assert outputs(native.process(messages(values))) == outputs(reference.process(messages(values)))


def test_a_native_sealer_fault_on_one_record_dead_letters_only_that_one(monkeypatch: pytest.MonkeyPatch):
    _, native = pair()
    native._shadow_ready = lambda hot: None  # type: ignore[method-assign]  # the fact path's own sealing
    assert isinstance(native.hot, NativePath)
    sealer = native.hot.sealer
    real = sealer.seal_batch

    def event_id(r: Any) -> str:  # a record, or an item (facts, chain_id, ...) of the fact path
        return r[0][native.facts.id_at] if type(r) is tuple else r.event_id

    def seal_batch(records, heads, *layout):
        records = list(records)
        if any(event_id(r) == "poison" for r in records):
            raise _Boom("a bug in the batch call")
        return real(records, heads, *layout)

    monkeypatch.setattr(sealer, "seal_batch", seal_batch)
    values = [wire(violating("ipasar", i)) for i in range(4)]
    values[1] = wire(violating("ipasar", 0, event_id="poison"))
    result = native.process(messages(values))
    assert [r.record_type for r in result.records] == [RecordType.DECISION, RecordType.REJECTION,
                                                       RecordType.DECISION, RecordType.DECISION]
    assert result.dead_letters == ["seal_failed"] and [r.seq for r in result.records] == [0, 1, 2, 3]
    audit = [record_from_bytes(o.value) for o in result.outgoing if o.topic == "audit"]
    assert audit == list(result.records)
    assert [r.prev_hash for r in audit[1:]] == [r.record_hash for r in audit[:-1]]  # one unbroken chain


# ---------------------------------------------------------------- the switch

def test_the_switch_defaults_to_the_compiled_path_and_can_be_turned_off():
    assert load_config(env={}).native is True
    assert load_config(env={"AUDITOR_NATIVE": "false"}).native is False


def test_the_daemon_is_built_on_the_path_the_switch_names(tmp_path: Path):
    from auditor.stream.app import build_daemon
    from auditor.trail.keys import KeyRing

    KeyRing.generate(tmp_path / "keys")
    for flag, path in (("true", NativePath), ("false", PythonPath)):
        cfg = load_config(env={"AUDITOR_NATIVE": flag, "AUDITOR_KEYS_DIR": str(tmp_path / "keys"),
                               "AUDITOR_POLICY_PACKS": "ipasar"})
        daemon = build_daemon(cfg)
        assert isinstance(daemon.processor.hot, path)
