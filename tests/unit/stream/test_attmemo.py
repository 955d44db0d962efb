"""attmemo: the shadow of the decision memo (auditor.native.FactMemo) attacked as a hostile producer.

Two things the memo's own tests (test_factmemo.py) do not hold. (1) An event of a key the shadow
knows but leaves to Python (a time past 2**53 us, a message whose partition is an int of another
type) is taught to it again at every Python hit; each teaching kept one more entry (a decision's
bytes and a labels tuple) until its cap of 2**20. (2) An oracle that shares nothing with the memo:
the reference here judges every event afresh with each test's own ``holds``
(``evaluate_interpreted``: no memo, no decision tails kept per key) on packs compiled for it
alone, while the shadowed processor has its own packs too (``streamkit.packs()`` is shared by
every processor of a test run, memos included, so a key that omits a fact the rules read gives
the same wrong decision on both sides of test_factmemo's comparison)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import NOW, PACK_IDS, ROUTING, TOPIC, StubMessage, compliant, violating, wire
from test_factmemo import reference, same, shadowed
from test_factpath_rounds import outputs
from test_stream_factseal import EXAMPLES

from auditor.events.codec import iter_json_lines
from auditor.events.model import ActorOrganisation, ConsentState, Event, Identifiability, Safeguard
from auditor.events.wire import EventDecoder
from auditor.native import FACT_MEMO_BUILT, NativeEventDecoder, NativeSealer
from auditor.policy import CompiledPack, Decision, compile_pack, parse_pack, resolve_pack
from auditor.policy.engine import MEMO_BYTES, MemoEvaluator, evaluate_interpreted
from auditor.stream.processor import BatchProcessor
from auditor.trail.keys import Pseudonymizer

pytestmark = pytest.mark.skipif(not FACT_MEMO_BUILT, reason="auditor._native was built before FactMemo: rebuild it")

#: 2300-01-01: within the schema's times, past 2**53 microseconds (the shadow leaves it to Python)
FAR = datetime(2300, 1, 1, tzinfo=UTC)


class _Partition(int):
    """An int of another type (as a client library might return): the shadow leaves it to Python."""


class OddPartition(StubMessage):
    def partition(self) -> int | None:
        return _Partition(self._partition)


@pytest.mark.parametrize("left", ["far-time", "odd-partition"])
def test_an_event_the_shadow_leaves_to_python_is_kept_once_per_key(left):
    """The shadow knows the key (learnt from ordinary events) but leaves these events to Python,
    whose fact path hits and teaches the shadow again at each one: the shadow must keep one entry
    per key, not one per event (before the fix: one entry per such event, up to its cap of 2**20
    entries, +221 MiB RSS measured by teaching FactMemo.learn one key 10**6 times)."""
    base = [replace(compliant(p, 0), event_id=f"k-{p}") for p in PACK_IDS]
    ref, (p, decided) = reference(), shadowed()
    for k in range(3):  # learnt: the shadow decides the ordinary ones from the second round
        same(ref, p, [StubMessage(TOPIC, 0, 10 * k + i, wire(e)) for i, e in enumerate(base)])
    assert decided[0] > 0
    known = len(p._shadow or ())
    assert 0 < known <= len(base)
    before = decided[0]
    for k in range(20):
        events = [replace(e, event_id=f"k{k}-{j}-{e.policy_id}") for j in range(10) for e in base]
        if left == "far-time":
            batch = [StubMessage(TOPIC, 0, 100 + 50 * k + i, wire(replace(e, occurred_at=FAR)))
                     for i, e in enumerate(events)]
        else:
            batch = [OddPartition(TOPIC, 0, 100 + 50 * k + i, wire(e)) for i, e in enumerate(events)]
        same(ref, p, batch)
    assert decided[0] == before  # all left to Python
    assert p.facts is not None and p.facts.hits >= 20 * known  # and decided there, from the memo
    assert len(p._shadow or ()) <= len(base)


# ---------------------------------------------------------------- an oracle without a shared memo

@lru_cache(maxsize=1)
def _parsed() -> dict[str, Any]:
    return {p: parse_pack(resolve_pack(p)) for p in PACK_IDS}


class Interpreted(MemoEvaluator):
    """Each event judged by each test's own ``holds``: no memo, no decision tails kept per key."""

    def __call__(self, e: Event) -> tuple[Decision, Decision]:
        d = evaluate_interpreted(e, self.compiled)
        return d, d


def own_packs(memo: bool) -> dict[str, CompiledPack]:
    """The bundled packs compiled afresh: memos shared with no other processor (``memo``: on or off)."""
    return {p: compile_pack(pack, memo_bytes=MEMO_BYTES if memo else 0) for p, pack in _parsed().items()}


#: the packs' example events (their adversarial cases included) and generated compliant and violating ones
TEMPLATES = [d.event for f in EXAMPLES for d in iter_json_lines(f) if d.event is not None] + \
    [compliant(p, i) for p in PACK_IDS for i in range(8)] + [violating(p, i) for p in PACK_IDS for i in range(8)]
IDS = ["a", "A", "\u00e1", "a\u0301", "\uff41", "\u0130", "i", "s-1", "S-1", "x\u200by", "actor-1", "Actor-1"]
REGIONS = [None, "", "my", "MY", "My", "sg", "SG", "de", "DE", "us", "\u00df", "SS", "\ufb00", "FF", " MY", "MY "]
#: the attributes the bundled packs' rules read, and neighbours of their names
ATTR_KEYS = ["user_made_public", "unsubscribe_link", "transfer_consent_withdrawn", "third_party_beacon",
             "subject_violated_rules", "service_active", "retention_period_expired", "requested_by_subject",
             "referral_requested_by_user", "obtained_lawfully", "ip_complaint_filed", "guardian_deletion_requested",
             "disclosure_requested", "disclosed_at_collection", "counterparty_fulfilled", "corporate_transaction",
             "cookies_accepted", "account_closed", "Cookies_accepted", "account_closed ", "k"]
#: those that turn most of the examples' allowed events into violations (drawn more often)
ATTR_FLIPS = ["guardian_deletion_requested", "retention_period_expired", "account_closed", "service_active",
              "unsubscribe_link", "corporate_transaction"]
ATTR_VALUES = ["true", "false", "True", "FALSE", "yes", "", "1", " true"]


@st.composite
def mutated(draw: st.DrawFn, e: Event, least: int, most: int) -> Event:
    """``e`` with ``least`` to ``most`` facts a rule may read changed to a hostile neighbour (case, Unicode
    forms, None vs empty, ages at the minor edge, the actor as the subject, attributes, the pack)."""
    for _ in range(draw(st.integers(least, most))):
        f = draw(st.sampled_from(["sid", "aid", "age", "minor", "region", "rcountry", "dest", "attrs", "attrs",
                                  "attrs", "basis", "behalf", "org", "ident", "consent", "cross", "role", "policy"]))
        s, a, r = e.subject, e.actor, e.recipient
        if f == "sid":
            e = replace(e, subject=replace(s, id=draw(st.sampled_from([*IDS, a.id, a.id.upper()]))))
        elif f == "aid":
            e = replace(e, actor=replace(a, id=draw(st.sampled_from([*IDS, s.id, s.id.upper()]))))
        elif f == "age":
            e = replace(e, subject=replace(s, age=draw(st.sampled_from([None, 0, 1, 12, 13, 15, 16, 17, 18, 19, 199]))))
        elif f == "minor":
            e = replace(e, subject=replace(s, is_minor=draw(st.sampled_from([None, True, False]))))
        elif f == "region":
            e = replace(e, subject=replace(s, region=draw(st.sampled_from(REGIONS))))
        elif f == "rcountry" and r is not None:
            e = replace(e, recipient=replace(r, country=draw(st.sampled_from(REGIONS))))
        elif f == "behalf" and r is not None:
            e = replace(e, recipient=replace(r, on_our_behalf=draw(st.sampled_from([None, True, False]))))
        elif f == "dest":
            e = replace(e, transfer=replace(e.transfer, destination_country=draw(st.sampled_from(REGIONS))))
        elif f == "cross":
            e = replace(e, transfer=replace(e.transfer, cross_border=draw(st.booleans()),
                                            safeguard=draw(st.sampled_from(list(Safeguard)))))
        elif f == "attrs":
            attrs = dict(e.attributes or {})
            k = draw(st.sampled_from(ATTR_FLIPS) | st.sampled_from([*ATTR_KEYS, *attrs]))
            if k in attrs and draw(st.booleans()):
                del attrs[k]
            else:
                attrs[k] = draw(st.sampled_from(["true", "false"]) | st.sampled_from(ATTR_VALUES))
            e = replace(e, attributes=attrs)
        elif f == "basis":
            e = replace(e, legal_basis=draw(st.sampled_from([None, "", "consent", "Consent", "contract",
                                                             "legal_obligation", "legitimate_interests"])))
        elif f == "org":
            e = replace(e, actor=replace(a, organisation=draw(st.sampled_from(list(ActorOrganisation)))))
        elif f == "ident":
            e = replace(e, identifiability=draw(st.sampled_from(list(Identifiability))))
        elif f == "consent":
            e = replace(e, consent=ConsentState(*draw(st.tuples(*[st.booleans()] * 4))))
        elif f == "policy":  # another pack's (many declare the same categories, purposes and recipients)
            e = replace(e, policy_id=draw(st.sampled_from(PACK_IDS)))
        elif f == "role":
            e = replace(e, actor=replace(a, role=draw(st.sampled_from([None, "", "dpo", "DPO", "support"]))))
    return e


@st.composite
def neighbours(draw: st.DrawFn) -> tuple[Event, ...]:
    """A pack's example event varied (A), and up to six neighbours of A (one fact changed each)."""
    a = draw(mutated(draw(st.sampled_from(TEMPLATES)), 0, 2))
    others = [draw(mutated(a, 1, 1)) for _ in range(draw(st.integers(1, 6)))]
    return tuple(replace(e, event_id=f"n{i}") for i, e in enumerate([a, *others]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(neighbours())
def test_neighbours_of_a_learnt_event_are_judged_as_without_any_memo(events):
    """A is learnt (three rounds: the memo, the fact path, then the shadow); then A and its
    neighbours: each record and output as a Python processor judging every event afresh gives
    (``Interpreted``: a memo key or decision tails cache that omits a fact the rules read would
    show here, also when the engine's own memo shares the fault)."""
    ref = BatchProcessor(EventDecoder(), own_packs(memo=False), Pseudonymizer(b"k" * 32), ROUTING, "unit-1",
                         clock=lambda: NOW)
    ref.evaluators = {pid: Interpreted(c) for pid, c in ref.packs.items()}
    p = BatchProcessor(NativeEventDecoder(), own_packs(memo=True), Pseudonymizer(b"k" * 32), ROUTING, "unit-1",
                       clock=lambda: NOW, sealer=NativeSealer())
    values = [wire(e) for e in events]
    for k, batch in enumerate([values[:1], values[:1], values[:1], values, values]):
        msgs = [StubMessage(TOPIC, 0, 10 * k + i, v) for i, v in enumerate(batch)]
        a, b = ref.process(msgs), p.process(msgs)
        assert outputs(b) == outputs(a)
        assert list(b.records) == list(a.records)
        ref.commit_heads()
        p.commit_heads()
