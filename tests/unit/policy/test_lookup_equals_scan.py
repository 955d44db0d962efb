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
