"""Adversarial read of the decision memo (atkE): hostile keys must not change a decision, and
hostile events must not grow the compiled pack's caches past their byte bounds."""

from __future__ import annotations

import dataclasses
import random
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

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
from auditor.policy import evaluate, load_pack
from auditor.policy.engine import compile_pack, evaluate_plain

DATA = Path(__file__).resolve().parents[2] / "data" / "packs"
HOSTILE = DATA / "hostile_attributes.yaml"

#: attribute names that collide after case folding, trimming or a Cyrillic look-alike, that read
#: like built-in facts or names in the generated key function, dotted and empty
NAMES = ["consent.marketing", "a.b.c", "a.b", "Flag", "flag", "FLAG", "flag ", "fl\u0430g", "_a2", "s", "e",
         "", " ", "_minor"]
VALUES = [None, "", "true", "True", "TRUE", "false", "x", "X", "yes", "Yes", "yes ", "y\u0435s", "1", "~",
          "x" * 65, "x" * 500, "\x00"]


def _event(rng: random.Random, i: int) -> Event:
    kind = rng.choice(list(EventKind))
    rec = None
    if kind is EventKind.DISCLOSURE:
        rec = Recipient("partner", rng.choice(["acme", "ACME", "acme ", "x"]), rng.choice([None, "DE", "de", "US", ""]),
                        rng.choice([None, True, False]))
    attrs = {}
    for _ in range(rng.randint(0, 5)):
        v = rng.choice(VALUES)
        if v is not None:
            attrs[rng.choice(NAMES)] = v
    return Event(
        f"e{i}", datetime(2026, 1, 1, tzinfo=UTC), kind, "hostile", "fuzz",
        Actor(rng.choice(list(ActorType)), rng.choice(["a", "s"]), rng.choice([None, "legal", "Legal", ""]),
              rng.choice(list(ActorOrganisation))),
        Subject("s", rng.choice([None, 0, 15, 16, 17]), rng.choice([None, True, False]),
                rng.choice([None, "DE", "de", "US", ""])),
        tuple(rng.choice(["contact", "payment"]) for _ in range(rng.randint(1, 3))),
        rng.choice(["support", "marketing"]), rec, rng.choice(list(Identifiability)),
        rng.choice([None, "contract", "Contract", "", "consent"]), LegalRequest(rng.choice(list(LegalRequestType))),
        ConsentState(*(rng.random() < 0.5 for _ in range(4))),
        Transfer(rng.random() < 0.5, rng.choice([None, "US", "us", "DE", ""]), rng.choice(list(Safeguard))), attrs)


def test_hostile_attribute_names_and_values_never_change_a_memoised_decision():
    """A pack testing attributes named like built-in facts, dotted, empty, in case variants and a
    Cyrillic look-alike, under not/any_of; events with colliding names and look-alike values: the
    memo answers as a fresh evaluation does (found nothing: kept as a regression test)."""
    memo = load_pack(HOSTILE)
    plain = compile_pack(memo.pack, memo_bytes=0)
    rng = random.Random(7)
    for i in range(4000):
        e = _event(rng, i)
        assert evaluate(e, memo) == evaluate_plain(e, plain), e
    assert memo.memo_hits > 100


def test_orders_and_repeats_of_declared_categories_keep_the_plan_cache_within_its_bytes():
    """Events naming declared categories in every order and with repeats each make a plan; before the
    fix the plan cache was bounded only by count (65,536 plans, about 3 KB each on ipasar: 230 MB of
    RSS after 70,000 such events while the memo stayed under its 32 MiB). Now plans are counted in
    bytes: the memory the caches keep stays near the two budgets."""
    compiled = load_pack("ipasar")
    budget = 512 * 1024
    compiled = compile_pack(compiled.pack, memo_bytes=budget, plan_bytes=budget)
    cats = sorted(compiled.pack.atoms)
    rng = random.Random(3)
    base = Event("b", datetime(2026, 1, 1, tzinfo=UTC), EventKind.USE, "ipasar", "fuzz",
                 Actor(ActorType.EMPLOYEE, "a"), Subject("s", 30), (cats[0],), sorted(compiled.pack.purposes)[0])
    evaluate(base, compiled)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(3000):
            cs = tuple(rng.choice(cats) for _ in range(rng.randint(2, 16)))
            evaluate(dataclasses.replace(base, data_categories=cs, event_id=f"x{i}"), compiled)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 2 * (budget + budget), f"the caches kept {grown} bytes"
    assert compiled.plan_bytes <= budget and compiled.memo_bytes <= budget


def test_plans_that_read_the_same_facts_share_one_key_function():
    """Each plan compiled its own memo key function (exec) before: a new order of the same categories
    cost a compile. The key function depends only on the facts read, so plans share it."""
    compiled = load_pack("ipasar")
    cats = sorted(compiled.pack.atoms)[:2]
    base = Event("b", datetime(2026, 1, 1, tzinfo=UTC), EventKind.USE, "ipasar", "fuzz",
                 Actor(ActorType.EMPLOYEE, "a"), Subject("s", 30), tuple(cats), sorted(compiled.pack.purposes)[0])
    one = compiled.plan(base)
    other = compiled.plan(dataclasses.replace(base, data_categories=tuple(reversed(cats))))
    assert one is not other and one.key_of is not None
    assert one.key_of is other.key_of
