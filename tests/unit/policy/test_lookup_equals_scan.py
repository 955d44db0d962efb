"""The compiled engine (index, cached plans, pre-decided category tests) judges exactly as a plain
scan of every rule would, on random events over each pack's vocabulary."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

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
from auditor.policy import Verdict, evaluate, load_pack
from auditor.policy.conditions import Derived
from auditor.policy.model import Effect, Pack

FEATURES = Path(__file__).resolve().parents[2] / "data" / "packs" / "features.yaml"


def scan(e: Event, pack: Pack) -> tuple[object, ...]:
    """The reference: every rule, in pack order, no index and no cache."""
    names = pack.atoms
    if any(c not in names for c in e.data_categories) or e.purpose not in pack.purposes or (
            e.recipient is not None and e.recipient.type not in pack.recipients):
        return ("undeclared",)
    x = Derived(frozenset().union(*(names[c] for c in e.data_categories)), e.subject.minor(pack.minor_age),
                pack.minor_age)
    rtype = e.recipient.type if e.recipient is not None else None

    def in_scope(r):  # type: ignore[no-untyped-def]
        s = r.scope
        return ((s.kinds is None or e.kind in s.kinds) and (s.recipients is None or rtype in s.recipients)
                and (s.purposes is None or e.purpose in s.purposes) and all(t.holds(e, x) for t in s.tests))

    permits = [r for r in pack.rules if r.effect is Effect.PERMIT and in_scope(r)]
    holding = [r.id for r in permits if all(c.holds(e, x) for c in r.conditions)]
    constraints = [r for r in pack.rules if r.effect is Effect.CONSTRAINT and in_scope(r)]
    broken_constraints = {r.id for r in constraints if r.forbid or not all(c.holds(e, x) for c in r.conditions)}
    held = set(holding) | {r.id for r in constraints if r.id not in broken_constraints}
    failed_permits = {r.id for r in permits if r.id not in holding}
    verdict = Verdict.ALLOW if holding and not broken_constraints else Verdict.VIOLATION
    return (verdict, holding[0] if holding else None, frozenset(held), broken_constraints,
            frozenset() if holding else failed_permits)


def engine(e: Event, compiled) -> tuple[object, ...]:  # type: ignore[no-untyped-def]
    d = evaluate(e, compiled)
    if any(v.kind.value == "UNDECLARED" for v in d.violations):
        return ("undeclared",)
    constraint_ids = {r.id for r in compiled.pack.constraints}
    reported = {v.rule_id for v in d.violations}
    permit_failures = (reported - constraint_ids - {f"{compiled.id}.default-deny"}) | {v.rule_id for v in d.considered}
    return (d.verdict, d.permitted_by.rule_id if d.permitted_by else None, frozenset(d.held),
            reported & constraint_ids, frozenset(permit_failures))


def random_event(rng: random.Random, pack: Pack, i: int) -> Event:
    kind = rng.choice(list(EventKind))
    cats = tuple(rng.sample(sorted(pack.atoms), k=rng.choice((1, 1, 2, 3))))
    recipient = None
    if kind is EventKind.DISCLOSURE:
        recipient = Recipient(rng.choice(sorted(pack.recipients)), rng.choice(["acme", "r-1"]),
                              rng.choice([None, "US", "DE", "MY", "JP"]), rng.choice([None, True, False]))
    regions = [None, "US", "DE", "FR", "MY", "SG", "JP", "ID"]
    return Event(
        f"r{i}", datetime(2026, 1, 1, tzinfo=UTC), kind, pack.id, "fuzz",
        Actor(rng.choice(list(ActorType)), "a", rng.choice([None, *sorted(pack.roles)[:4], "intern"]),
              rng.choice(list(ActorOrganisation))),
        Subject("s", rng.choice([None, 10, 15, 17, 30]), rng.choice([None, None, True, False]), rng.choice(regions)),
        cats, rng.choice(sorted(pack.purposes)), recipient, rng.choice(list(Identifiability)),
        rng.choice([None, "contract", "consent"]),
        LegalRequest(rng.choice(list(LegalRequestType))),
        ConsentState(*(rng.random() < 0.5 for _ in range(4))),
        Transfer(rng.random() < 0.4, rng.choice(regions), rng.choice(list(Safeguard))),
        rng.choice([{}, {"ticket_open": "true"}, {"corporate_transaction": "merger", "service_active": "true"},
                    {"cookies_accepted": "true", "requested_by_subject": "true"}]),
    )


@pytest.mark.parametrize("pack_id", ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct", str(FEATURES)])
def test_compiled_evaluation_equals_a_scan_of_every_rule(pack_id):
    compiled = load_pack(pack_id)
    rng = random.Random(pack_id)
    for i in range(3000):
        e = random_event(rng, compiled.pack, i)
        assert engine(e, compiled) == scan(e, compiled.pack), e


# ------------------------------------------------------------------ the memoised path against the plain one

def _reference_minor(age: int | None, flag: bool | None, minor_age: int) -> bool | None:
    """The documented reading, written out independently: a minor if either fact says so."""
    if flag is True or (age is not None and age < minor_age):
        return True
    if flag is None and age is None:
        return None
    return False


def _noise(rng: random.Random, e: Event, i: int) -> Event:
    """The same facts as ``e`` under another id, time, actor id, subject id and unread attributes:
    the memo must answer it as the plain evaluation does."""
    import dataclasses

    attrs = dict(e.attributes)
    if rng.random() < 0.5:
        attrs["noise"] = f"n{i}"
    return dataclasses.replace(
        e, event_id=f"again-{i}", occurred_at=datetime(2026, 2, 1 + i % 27, tzinfo=UTC),
        actor=dataclasses.replace(e.actor, id=f"a{i}"), subject=dataclasses.replace(e.subject, id=f"s{i}"),
        attributes=attrs, source_system="other")


def _one_fact_changed(rng: random.Random, e: Event, i: int) -> Event:
    """A look-alike of ``e`` with one fact a residual test may read changed: it meets the same plan,
    so a memo key that missed that fact would answer it with ``e``'s decision."""
    import dataclasses

    r = dataclasses.replace
    choices = [
        lambda: r(e, consent=r(e.consent, **{rng.choice(["marketing", "third_party_sharing", "guardian",
                                                          "marketing_opt_out"]): rng.random() < 0.5})),
        lambda: r(e, subject=r(e.subject, age=rng.choice([None, 12, 16, 17, 18, 40]),
                               is_minor=rng.choice([None, True, False]))),
        lambda: r(e, subject=r(e.subject, region=rng.choice([None, "US", "DE", "MY", "SG", "de"]))),
        lambda: r(e, actor=r(e.actor, organisation=rng.choice(list(ActorOrganisation)))),
        lambda: r(e, actor=r(e.actor, type=rng.choice(list(ActorType)))),
        lambda: r(e, actor=r(e.actor, role=rng.choice([None, "legal", "support", "intern"]))),
        lambda: r(e, actor=r(e.actor, id=rng.choice([e.subject.id, "a", "someone"]))),
        lambda: r(e, legal_request=LegalRequest(rng.choice(list(LegalRequestType)))),
        lambda: r(e, identifiability=rng.choice(list(Identifiability))),
        lambda: r(e, legal_basis=rng.choice([None, "contract", "Consent", "legal_obligation"])),
        lambda: r(e, transfer=Transfer(rng.random() < 0.5, rng.choice([None, "US", "DE", "MY", "JP"]),
                                       rng.choice(list(Safeguard)))),
        lambda: r(e, attributes={**e.attributes, rng.choice(["ticket_open", "cookies_accepted", "service_active",
                                                             "requested_by_subject", "corporate_transaction"]):
                                 rng.choice(["true", "false", "merger"])}),
    ]
    if e.recipient is not None:
        choices.append(lambda: r(e, recipient=r(e.recipient, id=rng.choice(["acme", "r-1", "bank"]),
                                                country=rng.choice([None, "US", "DE", "MY"]),
                                                on_our_behalf=rng.choice([None, True, False]))))
    return r(rng.choice(choices)(), event_id=f"changed-{i}")


@pytest.mark.parametrize("pack_id", ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct", str(FEATURES)])
def test_memoised_decisions_equal_plain_evaluation_on_generated_events(pack_id):
    """Property: for generated events and their look-alikes (memo hits), ``evaluate`` (plans + memo)
    gives exactly the decision (verdict, violations with reasons and failed conditions, permit, held,
    considered) of ``evaluate_plain`` on a pack compiled with the memo off, and the verdict of the scan."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from auditor.policy.engine import compile_pack, evaluate_plain

    memoised = load_pack(pack_id)
    plain = compile_pack(memoised.pack, memo_bytes=0)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.reuse, Phase.generate))
    @given(st.randoms(use_true_random=False), st.integers(min_value=1, max_value=40))
    def check(rng: random.Random, n: int) -> None:
        events = [random_event(rng, memoised.pack, i) for i in range(n)]
        events += [_noise(rng, rng.choice(events), i) for i in range(n)]
        events += [_one_fact_changed(rng, rng.choice(events), i) for i in range(2 * n)]
        for e in events:
            got = evaluate(e, memoised)
            want = evaluate_plain(e, plain)
            assert got == want, e
            assert got.event_id == e.event_id
            assert engine(e, memoised) == scan(e, memoised.pack), e

    check()
    assert memoised.memo_hits > 0 and plain.memo_entries() == 0


def test_minor_is_the_strict_reading_of_age_and_flag():
    """An event saying age 16 and is_minor false is a minor's (either fact suffices)."""
    from auditor.policy.conditions import subject_minor

    for age in (None, 0, 15, 16, 17, 18, 30):
        for flag in (None, True, False):
            s = Subject("s", age, flag)
            assert subject_minor(s, 18) == _reference_minor(age, flag, 18) == s.minor(18), (age, flag)
    assert subject_minor(Subject("s", 16, False), 18) is True
    assert subject_minor(Subject("s", 30, True), 18) is True
    assert subject_minor(Subject("s", 18, None), 18) is False
