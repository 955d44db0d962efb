"""Records sealed from the facts tuple (the compiled sealer's layout, stream/factpath.py) against
the Python reference: ``build_record`` from the Event and ``chain.seal_bytes``, byte for byte, on
every example event, the bench's generated stream and generated datums; and the processor that
uses them against the reference processor (records read back, violation messages, a sealer fault)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import NOW, PACK_IDS, messages, packs, processor, violating, wire

from auditor.events.codec import event_schema, iter_json_lines, subject_id_edges_clean
from auditor.events.model import ActorOrganisation, ActorType, EventKind, Identifiability, LegalRequestType, Safeguard
from auditor.events.wire import encode_single_object
from auditor.native import NativeEventDecoder, NativeSealer
from auditor.policy.engine import MemoEvaluator
from auditor.stream.budget import OutputBudget
from auditor.stream.factpath import FactPath
from auditor.stream.generate import stream
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.chain import ChainHead, seal_bytes
from auditor.trail.keys import Pseudonymizer
from auditor.trail.record import MAX_TEXT, SourceRef, build_record, decision_facts

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (ROOT / "tests/data/events").glob("*.jsonl") if p.name != "malformed.jsonl")
PSEUDONYMIZER = Pseudonymizer(b"k" * 32)
DECODER = NativeEventDecoder()
SEALER = NativeSealer()
FACTS = FactPath(DECODER.fact_names, {p: MemoEvaluator(c) for p, c in packs().items()})
LAYOUT = SEALER.add_layout(FACTS.layout("unit-1", PSEUDONYMIZER.key_id))


def example_values() -> list[bytes]:
    return [wire(d.event) for f in EXAMPLES for d in iter_json_lines(f) if d.event is not None]


def generated_values(n: int, seed: int = 11) -> list[bytes]:
    events = islice(stream(list(packs().values()), seed=seed, clock=lambda: datetime(2026, 4, 1, tzinfo=UTC)), n)
    return [e if isinstance(e, bytes) else wire(e) for e in events]


def both_ways(values: list[bytes], first_offset: int = 0) -> tuple[list[Any], list[Any], int]:
    """Every value the fact path would take (a short, plain event of a loaded pack): its record
    built from the Event and sealed by the Python reference, and its item sealed by the layout.
    Returns (reference bytes, layout bytes, count); chains over three partitions."""
    heads: dict[str, ChainHead] = {}
    reference: list[bytes] = []
    items: list[tuple[Any, ...]] = []
    for i, (value, facts, decoded) in enumerate(zip(values, DECODER.decode_facts(values),
                                                     DECODER.decode_events(values), strict=True)):
        if isinstance(decoded, Exception) or len(value) > MAX_TEXT or not FACTS._plain(facts.facts):
            continue
        event, t = decoded.event, facts.facts
        evaluator = FACTS.evaluators.get(event.policy_id)
        if evaluator is None:
            continue
        decision, _ = evaluator(event)
        decided = decision_facts(decision)
        source = SourceRef("events", i % 3, first_offset + i)
        record = build_record(event, decision, source, PSEUDONYMIZER, "unit-1", NOW, digest=decoded.digest,
                              decided=decided, short=True)
        chain = source.chain_id
        data, heads[chain] = seal_bytes(heads.get(chain) or ChainHead.genesis(chain), record)
        reference.append(data)
        items.append((t, chain, "events", i % 3, first_offset + i, facts.digest, PSEUDONYMIZER(t[FACTS.actor_at]),
                      PSEUDONYMIZER(t[FACTS.subject_at]), SEALER.encode_field("decision", decided)))
    sealed, new = SEALER.seal_batch(items, {}, LAYOUT, (NOW,))
    assert new == {c: h for c, h in heads.items()}
    return reference, [s.data for s in sealed], len(items)


# ---------------------------------------------------------------- the sealer's layout

def test_every_example_event_sealed_from_its_facts_is_the_reference_record():
    reference, ours, n = both_ways(example_values())
    assert n > 200
    assert ours == reference


def test_a_generated_stream_sealed_from_its_facts_is_the_reference_records():
    reference, ours, n = both_ways(generated_values(3000))
    assert n > 2500
    assert ours == reference


def events() -> st.SearchStrategy[dict[str, Any]]:
    """Events the fact path takes (the event's own checks pass), with any text in their text
    fields: unicode, long and short, optional values present or not, every enum symbol."""
    text = st.text(min_size=1, max_size=24)
    maybe = st.none() | st.text(max_size=24)
    recipient = st.fixed_dictionaries({"type": text | st.sampled_from(["processor", "third_party", "affiliate"]),
                                       "id": text, "country": maybe, "on_our_behalf": st.none() | st.booleans()})

    def event(kind: str, r: Any, rest: dict[str, Any]) -> dict[str, Any]:
        return {**rest, "kind": kind, "recipient": r if kind == "DISCLOSURE" else None}

    return st.builds(event, st.sampled_from([k.value for k in EventKind]), recipient, st.fixed_dictionaries({
        "event_id": text, "policy_id": st.sampled_from(PACK_IDS), "source_system": text,
        "occurred_at": st.datetimes(datetime(1971, 1, 1), datetime(2099, 1, 1), timezones=st.just(UTC)),
        "actor": st.fixed_dictionaries({"type": st.sampled_from([a.value for a in ActorType]), "id": text,
                                        "role": maybe,
                                        "organisation": st.sampled_from([o.value for o in ActorOrganisation])}),
        "subject": st.fixed_dictionaries({"id": text.filter(subject_id_edges_clean),
                                          "age": st.none() | st.integers(0, 199),
                                          "is_minor": st.none() | st.booleans(), "region": maybe}),
        "data_categories": st.lists(text | st.sampled_from(["account_information", "health"]), min_size=1,
                                    max_size=3),
        "purpose": text | st.sampled_from(["analytics", "marketing", "buyer_seller_communication"]),
        "identifiability": st.sampled_from([i.value for i in Identifiability]), "legal_basis": maybe,
        "legal_request": st.fixed_dictionaries({"type": st.sampled_from([t.value for t in LegalRequestType]),
                                                "reference": maybe}),
        "consent": st.fixed_dictionaries({k: st.booleans() for k in ("marketing", "third_party_sharing",
                                                                     "guardian", "marketing_opt_out")}),
        "transfer": st.fixed_dictionaries({"cross_border": st.booleans(), "destination_country": maybe,
                                           "safeguard": st.sampled_from([g.value for g in Safeguard])}),
        "attributes": st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4),
    }))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_generated_events_sealed_from_their_facts_are_the_reference_records(mapping):
    value = encode_single_object(mapping)
    reference, ours, n = both_ways([value])
    assert n == 1  # the fact path takes every such event
    assert ours == reference


def test_items_and_record_objects_in_one_batch_share_their_chains_in_order():
    values = generated_values(300, seed=5)
    reference, _, n = both_ways(values)
    decoded = [d for d in DECODER.decode_events(values) if not isinstance(d, Exception)]
    assert n > 200 and decoded
    # the same batch again, every other event as an AuditRecord built in Python
    heads: dict[str, ChainHead] = {}
    items: list[Any] = []
    for i, (value, facts, d) in enumerate(zip(values, DECODER.decode_facts(values), DECODER.decode_events(values),
                                              strict=True)):
        if isinstance(d, Exception) or len(value) > MAX_TEXT or not FACTS._plain(facts.facts):
            continue
        evaluator = FACTS.evaluators.get(d.event.policy_id)
        if evaluator is None:
            continue
        decision, _ = evaluator(d.event)
        decided = decision_facts(decision)
        source = SourceRef("events", i % 3, i)
        if len(items) % 2:
            items.append(build_record(d.event, decision, source, PSEUDONYMIZER, "unit-1", NOW, digest=d.digest,
                                      decided=decided, short=True))
        else:
            t = facts.facts
            items.append((t, source.chain_id, "events", i % 3, i, facts.digest, PSEUDONYMIZER(t[FACTS.actor_at]),
                          PSEUDONYMIZER(t[FACTS.subject_at]), SEALER.encode_field("decision", decided)))
    sealed, _ = SEALER.seal_batch(items, heads, LAYOUT, (NOW,))
    assert [s.data for s in sealed] == reference


def test_a_layout_must_name_every_field_of_the_schema_and_nothing_else():
    spec = FACTS.layout("unit-1", PSEUDONYMIZER.key_id)
    missing = {k: v for k, v in spec.items() if k != "ledger"}
    with pytest.raises(ValueError, match="'ledger' is not given"):
        SEALER.add_layout(missing)
    facts = spec["facts"]
    nested = {**spec, "facts": (facts[0], facts[1], {k: v for k, v in facts[2].items() if k != "purpose"})}
    with pytest.raises(ValueError, match="'facts.purpose' is not given"):
        SEALER.add_layout(nested)
    with pytest.raises(ValueError, match="no field 'colour'"):
        SEALER.add_layout({**spec, "colour": ("const", None)})
    with pytest.raises(ValueError, match="bad spec"):
        SEALER.add_layout({**spec, "event_id": ("guess", 1)})


def test_the_reader_schema_enums_are_the_python_enums():
    # the layout copies these facts as the strings the decoder gives; the full path turns them into
    # the Python enums (and would refuse a symbol they lack): the two must agree
    fields = {f["name"]: f["type"] for f in event_schema()["fields"]}

    def symbols(t: Any) -> list[str]:
        return list(t["symbols"])

    def sub(record: str, name: str) -> Any:
        t = fields[record]
        t = next(b for b in t if isinstance(b, dict)) if isinstance(t, list) else t
        return next(f["type"] for f in t["fields"] if f["name"] == name)

    assert symbols(fields["kind"]) == [k.value for k in EventKind]
    assert symbols(fields["identifiability"]) == [k.value for k in Identifiability]
    assert symbols(sub("actor", "type")) == [k.value for k in ActorType]
    assert symbols(sub("actor", "organisation")) == [k.value for k in ActorOrganisation]
    assert symbols(sub("legal_request", "type")) == [k.value for k in LegalRequestType]
    assert symbols(sub("transfer", "safeguard")) == [k.value for k in Safeguard]


# ---------------------------------------------------------------- the processor

def pair() -> tuple[BatchProcessor, BatchProcessor]:
    reference = processor()
    native = BatchProcessor(NativeEventDecoder(), packs(), Pseudonymizer(b"k" * 32), reference.routing, "unit-1",
                            clock=lambda: NOW, sealer=NativeSealer())
    return reference, native


def outputs(r: BatchResult) -> tuple[Any, ...]:
    return (r.outgoing, [(seq, prev, h) for _, seq, prev, h in r.sealed], r.audited, r.violations, r.dead_letters,
            r.occurred_at, r.decision_seconds != [])


def twice(values: list[bytes], reference: BatchProcessor, native: BatchProcessor) -> tuple[BatchResult, BatchResult]:
    """The batch through both (the first time fills the memo), then again: the second results."""
    for p in (reference, native):
        p.process(messages(values))
        p.commit_heads()
    hits = native.facts.hits if native.facts is not None else 0
    a, b = reference.process(messages(values, first_offset=len(values))), \
        native.process(messages(values, first_offset=len(values)))
    assert native.facts is not None and native.facts.hits >= hits + len(values) // 2
    return a, b


def test_the_records_of_events_audited_from_their_facts_read_back_as_the_reference_records():
    reference, native = pair()
    a, b = twice(example_values()[:200], reference, native)
    assert outputs(b)[:-1] == outputs(a)[:-1]
    assert list(b.records) == list(a.records)
    assert [r for r, *_ in b.sealed] == [r for r, *_ in a.sealed]


def test_violation_messages_built_from_the_template_are_the_reference_messages():
    values = [wire(violating(pack, i)) for pack in PACK_IDS for i in range(6)]
    reference, native = pair()
    a, b = twice(values, reference, native)
    assert len(a.violations) >= len(values)
    assert [o for o in b.outgoing if o.topic == "violations"] == [o for o in a.outgoing if o.topic == "violations"]
    assert b.violations == a.violations


def test_a_violation_message_over_its_budget_is_cut_as_the_reference_cuts_it():
    values = [wire(violating(pack, i)) for pack in PACK_IDS for i in range(3)]
    reference, native = pair()
    for p in (reference, native):
        p.budget = OutputBudget(audit=p.budget.audit, violations=600, dead_letter=p.budget.dead_letter)
    a, b = twice(values, reference, native)
    cut = [o.value for o in a.outgoing if o.topic == "violations" and b'"truncated":true' in o.value]
    assert cut
    assert [o for o in b.outgoing if o.topic == "violations"] == [o for o in a.outgoing if o.topic == "violations"]


def test_an_item_the_compiled_sealer_cannot_build_is_sealed_the_full_way(monkeypatch: pytest.MonkeyPatch):
    reference, native = pair()
    native._shadow_ready = lambda hot: None  # type: ignore[method-assign]  # the fact path's own sealing
    values = example_values()[:60]
    for p in (reference, native):
        p.process(messages(values))
        p.commit_heads()
    sealer = native.hot.sealer  # type: ignore[attr-defined]
    real = sealer.seal_batch
    items = [0]

    def seal_batch(records, heads, *layout):
        records = list(records)
        items[0] += sum(type(r) is tuple for r in records)
        if any(type(r) is tuple for r in records):
            raise ValueError("a layout bug")
        return real(records, heads, *layout)

    monkeypatch.setattr(sealer, "seal_batch", seal_batch)
    again = messages(values, first_offset=60)
    a, b = reference.process(again), native.process(again)
    assert items[0] > 30  # the fact path was taken, and its items refused
    assert outputs(b)[:-1] == outputs(a)[:-1] and not b.dead_letters


def one_record_each(r: BatchResult, n: int) -> None:
    """Each of the batch's n inputs has one record and one audit message, audited or dead-lettered once."""
    assert len(r.sealed) == n and sum(o.topic == "audit" for o in r.outgoing) == n
    assert len(r.audited) + len(r.dead_letters) == n == len(r.occurred_at) + len(r.dead_letters)
    assert len(r.violations) >= sum(o.topic == "violations" for o in r.outgoing)


def with_audit_budget(audit: int, *processors: BatchProcessor) -> None:
    for p in processors:
        p.budget = OutputBudget(audit=audit, violations=p.budget.violations, dead_letter=p.budget.dead_letter)


def test_records_over_the_audit_budget_on_the_fact_path_are_rejected_in_the_same_place():
    """Rejections among records placed from their facts tuple: the batch is sealed again and each
    round's outputs are taken back, so nothing is placed twice and the chains relink."""
    values = [wire(violating(pack, i)) for pack in PACK_IDS for i in range(4)] + example_values()[:40]
    reference, native = pair()
    with_audit_budget(900, reference, native)
    a, b = twice(values, reference, native)
    assert outputs(b) == outputs(a)
    one_record_each(b, len(values))
    assert 0 < a.dead_letters.count("record_too_large") < len(values) // 2


POOL = generated_values(400, seed=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=60), st.integers(650, 1400),
       st.lists(st.integers(0, 59), max_size=3))
def test_generated_batches_with_rejections_give_the_reference_outputs(picks, audit, faults):
    """Generated batches (malformed inputs included), audit budgets that reject some records, and
    route faults on some fact-path events: the fact path's outputs are the reference's."""
    values = [POOL[i] for i in picks]
    reference, native = pair()
    # the faults are put in the fact path's Python route; the memo's shadow builds the violations of
    # its hits in compiled code (6cfdfde), where no Python seam reaches: without it, a poisoned event
    # whose template another event taught is routed there, and the two sides differ by the seam alone
    native._shadow_ready = lambda hot: None  # type: ignore[method-assign]
    with_audit_budget(audit, reference, native)
    assert native.facts is not None
    decoded = [getattr(d, "facts", None) for d in DECODER.decode_facts(values)]
    poison = {t[native.facts.id_at] for i, t in enumerate(decoded) if i in faults and t is not None}
    for p in (reference, native):
        real = p._violation_message, p._fact_violation

        def violation_message(d, *args, real=real[0], **kwargs):
            if d.event_id in poison:
                raise TypeError("a routing bug")
            return real(d, *args, **kwargs)

        def fact_violation(it, *args, real=real[1]):
            if it[0][native.facts.id_at] in poison:
                raise TypeError("a routing bug")
            return real(it, *args)

        p._violation_message = violation_message  # type: ignore[method-assign]
        p._fact_violation = fact_violation  # type: ignore[method-assign]
    for p in (reference, native):
        p.process(messages(values))
        p.commit_heads()
    a, b = reference.process(messages(values, first_offset=100)), native.process(messages(values, first_offset=100))
    assert outputs(b) == outputs(a)
    assert list(b.records) == list(a.records)
    one_record_each(b, len(values))
