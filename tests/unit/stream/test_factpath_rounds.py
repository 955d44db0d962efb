"""attfact: the fact path (events audited from their facts tuple, routed and placed in one pass,
a batch sealed again taking back its earlier round's outputs) against the Python reference and
the compiled full path (the same compiled decoder and sealer, no fact path), over sequences of
batches: fact-path, full-path and rejected inputs in any order and on two partitions, audit
budgets that refuse records anywhere in a batch, batches discarded and processed again, the
pipelined order (batch N+1 processed on N's working heads), memos dropped between batches and
a pseudonym memo small enough to be dropped within one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import NOW, PACK_IDS, TOPIC, StubMessage, compliant, messages, packs, processor, violating, wire
from test_stream_factseal import events, generated_values

from auditor.errors import TransientError
from auditor.events.codec import subject_id_edges_clean
from auditor.events.model import ActorOrganisation, ConsentState, LegalRequest, LegalRequestType, Safeguard, Transfer
from auditor.events.wire import encode_single_object
from auditor.native import FactMemo, NativeEventDecoder, NativeSealer
from auditor.stream.budget import OutputBudget
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.keys import Pseudonymizer


class SmallMemoPseudonymizer(Pseudonymizer):
    """A pseudonymizer whose memo is dropped every few ids (BytesMemo clears itself when full)."""

    __slots__ = ()
    MEMO_MAX_BYTES = 1600


def _with_policy(value: bytes, policy: str) -> bytes:
    return value.replace(b"ipasar", policy.encode()[:6].ljust(6, b"x"))


def pool() -> list[bytes | None]:
    values: list[bytes | None] = list(generated_values(160, seed=23))
    values += [wire(violating(p, i)) for p in PACK_IDS for i in range(4)]
    values += [wire(compliant(p, i)) for p in PACK_IDS for i in range(4)]
    # the same event with another subject (the same template, other pseudonyms), and actor == subject
    base = compliant("ipasar", 0)
    values += [wire(replace(base, event_id=f"s{i}", subject=replace(base.subject, id=f"subject-{i}")))
               for i in range(6)]
    values += [wire(replace(base, event_id="self", subject=replace(base.subject, id=base.actor.id)))]
    # rejected at decoding: garbage, a tombstone, an unknown policy; and a long input (the full way)
    values += [b"\xc3\x01garbage", None, b"", _with_policy(wire(base), "nopack")]
    values += [wire(replace(base, event_id="long-" + "x" * 1200))]
    return values


POOL = pool()
PARTITIONS = 2
HITS: list[int] = []


def three() -> tuple[BatchProcessor, BatchProcessor, BatchProcessor]:
    """The Python reference, the compiled full path (no fact path) and the fact path."""
    reference = processor()
    full = BatchProcessor(NativeEventDecoder(), packs(), Pseudonymizer(b"k" * 32), reference.routing, "unit-1",
                          clock=lambda: NOW, sealer=NativeSealer())
    full.facts = None
    fact = BatchProcessor(NativeEventDecoder(), packs(), SmallMemoPseudonymizer(b"k" * 32), reference.routing,
                          "unit-1", clock=lambda: NOW, sealer=NativeSealer())
    return reference, full, fact


def outputs(r: BatchResult) -> tuple[Any, ...]:
    return (r.outgoing, [(seq, prev, h) for _, seq, prev, h in r.sealed], r.audited, r.violations, r.dead_letters,
            r.occurred_at)


def one_record_each(r: BatchResult, n: int) -> None:
    assert len(r.sealed) == n and sum(o.topic == "audit" for o in r.outgoing) == n
    assert len(r.audited) + len(r.dead_letters) == n == len(r.occurred_at) + len(r.dead_letters)
    # per partition, the audit records are in input order (one chain per source partition)
    for part in range(PARTITIONS):
        seqs = [seq for rec, seq, *_ in r.sealed if rec.chain_id.endswith(f"/{part}") or
                rec.chain_id.endswith(f":{part}")]
        assert seqs == sorted(seqs)


def batch_of(picks: list[int], parts: list[int], offsets: dict[int, int]) -> list[StubMessage]:
    out = []
    for i, p in zip(picks, parts, strict=False):
        out.append(StubMessage(TOPIC, p, offsets.get(p, 0), POOL[i]))
        offsets[p] = offsets.get(p, 0) + 1
    return out


def set_budget(p: BatchProcessor, audit: int, violations: int) -> None:
    p.budget = OutputBudget(audit=audit, violations=violations, dead_letter=p.budget.dead_letter)


def same_on_three(procs: tuple[BatchProcessor, ...], batch: list[StubMessage],
                  budget: tuple[int, int] | None = None) -> list[BatchResult]:
    """Process ``batch`` on the three paths (after setting their output budgets): the same outputs
    and records on each, one record per input; the results, nothing committed."""
    if budget is not None:
        for p in procs:
            set_budget(p, *budget)
    results = [p.process(batch) for p in procs]
    for r in results[1:]:
        assert outputs(r) == outputs(results[0])
        assert list(r.records) == list(results[0].records)
    one_record_each(results[2], len(batch))
    return results


STEP = st.tuples(
    st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=40),
    st.lists(st.integers(0, PARTITIONS - 1), min_size=40, max_size=40),
    st.sampled_from([300, 700, 900, 1100, 1300, 1 << 20]),
    st.sampled_from([500, 900, 1 << 20]),
    st.sampled_from(["commit", "retry", "pipeline", "drop-memos"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, min_size=2, max_size=5))
def test_sequences_of_batches_give_the_reference_outputs_on_every_path(steps):
    procs = three()
    offsets: dict[int, int] = {}
    queued: list[tuple[list[StubMessage], int, int]] = []
    for picks, parts, audit, violations, action in steps:
        batch = batch_of(picks, parts, offsets)
        results = same_on_three(procs, batch, (audit, violations))
        if action == "retry":  # the transaction aborted: the same batch again gives the same bytes
            for p, r in zip(procs, results, strict=True):
                p.discard_heads()
                assert outputs(p.process(batch)) == outputs(r)
            for p in procs:
                p.commit_heads()
        elif action == "pipeline":  # N's heads, N+1 processed on them, then N commits
            queued.append((batch, audit, violations))
            heads = [p.working_heads() for p in procs]
            nxt = batch_of(picks[::-1], parts, offsets)
            second = [p.process(nxt) for p in procs]
            for r in second[1:]:
                assert outputs(r) == outputs(second[0])
            one_record_each(second[0], len(nxt))
            for p, h in zip(procs, heads, strict=True):
                p.commit_heads(h)
            for p in procs:
                p.commit_heads()
        else:
            for p in procs:
                p.commit_heads()
            if action == "drop-memos":
                fact = procs[2]
                fact._decided.clear()
                assert fact.facts is not None
                fact.facts._keys.clear()
                fact.pseudonymizer._memo.clear()
    assert procs[0].heads == procs[1].heads == procs[2].heads


def test_the_fact_path_is_taken_in_these_sequences():
    """The sequences above exercise the fact path (else they compare two full paths)."""
    procs = three()
    offsets: dict[int, int] = {}
    for _ in range(2):
        batch = batch_of(list(range(len(POOL))), [i % PARTITIONS for i in range(len(POOL))], offsets)
        results = [p.process(batch) for p in procs]
        for r in results[1:]:
            assert outputs(r) == outputs(results[0])
        for p in procs:
            p.commit_heads()
    assert procs[2].facts is not None and procs[2].facts.hits > 100


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=8), st.lists(st.integers(0, PARTITIONS - 1), min_size=8, max_size=8),
       st.sampled_from([700, 1000, 1 << 20]), st.sampled_from([400, 800, 1 << 20]))
def test_generated_events_twice_give_the_reference_outputs_on_every_path(mappings, parts, audit, violations):
    """Any event the fact path takes (hostile text, every enum symbol, optional values present or
    not), each batch twice: the second time the memo knows them and the fact path audits them."""
    values = [encode_single_object(m) for m in mappings]
    values += values[:2]  # the same template again in the batch
    procs = three()
    offsets: dict[int, int] = {}
    hits = 0
    for _ in range(2):
        batch = [StubMessage(TOPIC, parts[i % len(parts)], offsets.setdefault(parts[i % len(parts)], 0) + i, v)
                 for i, v in enumerate(values)]
        same_on_three(procs, batch, (audit, violations))
        for p in procs:
            p.commit_heads()
        offsets = {k: v + len(values) for k, v in offsets.items()}
        assert procs[2].facts is not None
        hits = procs[2].facts.hits
    HITS.append(hits)


TEMPLATES = [compliant(p, i) for p in PACK_IDS for i in range(6)] + \
    [violating(p, i) for p in PACK_IDS for i in range(6)]


@st.composite
def variations(draw: st.DrawFn) -> bytes:
    """A pack's own example event (a plan the memo keeps) with its other facts varied: ids, free
    texts, ages, regions, countries, consent, transfer, attributes, organisation, legal request."""
    e = draw(st.sampled_from(TEMPLATES))
    text = st.text(min_size=1, max_size=10) | st.sampled_from(["a", "b", "subject-1", "actor-1"])
    maybe = st.none() | text | st.sampled_from(["MY", "SG", "US", "EU"])
    subject = replace(e.subject, id=draw(text.filter(subject_id_edges_clean) | st.just(e.subject.id)),
                      age=draw(st.sampled_from([e.subject.age, None, 5, 15, 17, 18, 40, 199])),
                      is_minor=draw(st.sampled_from([e.subject.is_minor, None, True, False])),
                      region=draw(st.sampled_from([e.subject.region, None, "MY", "SG", "EU"])))
    actor = replace(e.actor, id=draw(st.sampled_from([e.actor.id, subject.id]) | text),
                    role=draw(st.sampled_from([e.actor.role, None]) | text),
                    organisation=draw(st.sampled_from(list(ActorOrganisation))))
    recipient = e.recipient and replace(e.recipient, id=draw(text),
                                        country=draw(st.sampled_from([e.recipient.country]) | maybe),
                                        on_our_behalf=draw(st.sampled_from([e.recipient.on_our_behalf, None, True,
                                                                            False])))
    consent = draw(st.sampled_from([e.consent, ConsentState(*draw(st.tuples(*[st.booleans()] * 4)))]))
    transfer = draw(st.sampled_from([e.transfer, Transfer(draw(st.booleans()), draw(maybe),
                                                          draw(st.sampled_from(list(Safeguard))))]))
    legal = draw(st.sampled_from([e.legal_request, LegalRequest(draw(st.sampled_from(list(LegalRequestType))),
                                                                draw(maybe))]))
    attrs = draw(st.sampled_from([dict(e.attributes or {}), {}]) |
                 st.dictionaries(st.sampled_from(["channel", "region", "note", "k"]), text, max_size=3))
    return wire(replace(e, event_id=draw(text), actor=actor, subject=subject, recipient=recipient, consent=consent,
                        transfer=transfer, legal_request=legal, attributes=attrs,
                        legal_basis=draw(st.sampled_from([e.legal_basis, None]) | text)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(variations(), min_size=1, max_size=10), st.lists(st.integers(0, PARTITIONS - 1), min_size=10,
                                                                  max_size=10),
       st.sampled_from([800, 1000, 1 << 20]), st.sampled_from([400, 900, 1 << 20]))
def test_varied_template_events_give_the_reference_outputs_on_every_path(values, parts, audit, violations):
    """Events of the memo's plans differing in the facts a rule reads or does not: on the second
    pass the fact path audits them from the memo, with the verdicts and bytes of the full decode."""
    values = values + values[:1]
    procs = three()
    for k in range(2):
        batch = [StubMessage(TOPIC, parts[i % len(parts)], 100 * k + i, v) for i, v in enumerate(values)]
        same_on_three(procs, batch, (audit, violations))
        for p in procs:
            p.commit_heads()
    assert procs[2].facts is not None
    HITS.append(procs[2].facts.hits)


def _long(i: int, e: Any, long: bool) -> bytes:
    """A pack's example event; ``long``: an attribute that makes its record over a 750-byte budget."""
    note = "n" * (300 if long else 1)
    return wire(replace(e, event_id=f"pos-{i}", attributes={**(e.attributes or {}), "note": note}))


@pytest.mark.parametrize("refused", [(0,), (5,), (10,), (0, 10), (4, 5), (3, 8), tuple(range(11)), ()])
@pytest.mark.parametrize("kinds", ["fact", "mixed", "rejects-between"])
def test_audit_budget_refusals_at_any_position_give_the_reference_outputs(refused, kinds):
    """Records the audit budget refuses first, last, in the middle, adjacent, twice, all or none,
    among fact-path records, full-path records and decode rejections: the reference outputs, one
    record per input in order, every refused input a record_too_large dead letter."""
    base = [compliant(p, i) for p in PACK_IDS for i in range(2)][:6] + [violating(p, 0) for p in PACK_IDS][:6]
    values: list[bytes | None] = [_long(i, e, i in refused) for i, e in enumerate(base)]
    expected = len(refused)
    if kinds == "mixed":  # every third one a long input, the full way (its record over the budget too)
        full = [i for i in range(len(values)) if i % 3 == 2 and i not in refused]
        values = [wire(replace(base[i], event_id="L" * 1100)) if i in full else v for i, v in enumerate(values)]
        expected += len(full)
    elif kinds == "rejects-between":
        values = [x for v in values for x in (v, b"\x00bad")]
    procs = three()
    for p in procs:
        set_budget(p, 750, 1 << 20)
    for k in range(2):
        batch = [StubMessage(TOPIC, 0, 100 * k + i, v) for i, v in enumerate(values)]
        hits = procs[2].facts.hits if procs[2].facts is not None else 0
        results = same_on_three(procs, batch)
        assert results[2].dead_letters.count("record_too_large") == expected
        for p in procs:
            p.commit_heads()
    assert procs[2].facts is not None and procs[2].facts.hits - hits >= 4


def test_a_batch_that_failed_mid_seal_gives_the_same_bytes_when_processed_again(monkeypatch: pytest.MonkeyPatch):
    """A transient fault in the compiled sealer after the first round (a record refused by the
    budget makes a second round): nothing advances, and the batch processed again after
    discard_heads gives the bytes of a processor that never failed."""
    values: list[bytes | None] = [_long(i, e, i in (2, 7)) for i, e in enumerate(
        [compliant(p, i) for p in PACK_IDS for i in range(2)] + [violating(p, 0) for p in PACK_IDS])]
    procs = three()
    for p in procs:
        set_budget(p, 750, 1 << 20)
        p.process(messages(values))
        p.commit_heads()
    fact = procs[2]
    sealer = fact.hot.sealer  # type: ignore[attr-defined]
    calls = [0]

    def failing(real: Any) -> Any:
        def seal_batch(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == 2:
                raise TransientError("the sealer's dependency is down")
            return real(*args, **kwargs)
        return seal_batch

    monkeypatch.setattr(sealer, "seal_batch", failing(sealer.seal_batch))
    # the shadow of the memo seals its batches (hits and the others) in one call of its own
    monkeypatch.setattr(FactMemo, "seal", staticmethod(failing(FactMemo.seal)))
    heads, working = dict(fact.heads), dict(fact._working)
    again = messages(values, first_offset=len(values))
    with pytest.raises(TransientError):
        fact.process(again)
    assert fact.heads == heads and fact._working == working
    fact.discard_heads()
    b = fact.process(again)
    a = procs[0].process(again)
    assert outputs(b) == outputs(a)
    one_record_each(b, len(values))
    assert b.dead_letters.count("record_too_large") == 2
