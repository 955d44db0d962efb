"""A realistic synthetic event stream for the demo and the benchmarks, derived from the packs.

For each pack, every permit rule yields a *witness*: an event that satisfies the rule's scope
and conditions (and is judged ALLOW). Mutations of witnesses (consent withdrawn, recipient using
the data for its own purposes, no legal request, an undeclared purpose, a minor without guardian
consent, an unsafeguarded transfer, a wrong role) give violations of each kind. The stream mixes
them, mostly compliant, with fresh ids and times. Deterministic for a given seed.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

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
from auditor.ledger.model import FactType, Scope, SubjectFact
from auditor.policy import CompiledPack, Verdict, evaluate
from auditor.policy import conditions as c
from auditor.policy.model import Effect, Rule

SYSTEMS = ("crm", "billing", "marketing-mailer", "risk-engine", "data-warehouse", "legal-desk", "support-desk")


_FIELD_OF_FACT = {"legal_request.type": "legal", "identifiability": "identifiability",
                  "recipient.on_our_behalf": "on_our_behalf", "actor.role": "role", "actor.type": "actor_type",
                  "actor.organisation": "organisation"}


def _satisfy(cond: c.Condition, fields: dict[str, object], pack: CompiledPack) -> None:
    if isinstance(cond, c.Consent):
        fields[f"consent_{cond.flag}"] = True
    elif isinstance(cond, c.FactIn) and cond.fact in _FIELD_OF_FACT:
        accepted = sorted((v for v in cond.accepted if v is not None), key=lambda v: str(getattr(v, "value", v)))
        if accepted:
            fields[_FIELD_OF_FACT[cond.fact]] = accepted[0]
    elif isinstance(cond, c.OnlyCategories):
        allowed = sorted(cond.allowed)
        current = [x for x in fields.get("categories", []) if x in cond.allowed]  # type: ignore[attr-defined]
        fields["categories"] = current or allowed[:1]
    elif isinstance(cond, c.AttributeEquals):
        attrs = dict(fields.get("attributes", {}))  # type: ignore[call-overload]
        attrs[cond.key] = cond.value
        fields["attributes"] = attrs
    elif isinstance(cond, c.AnyOf) and cond.options:
        _satisfy(cond.options[0], fields, pack)
    elif isinstance(cond, c.AllOf):
        for part in cond.parts:
            _satisfy(part, fields, pack)


def witness(rule: Rule, pack: CompiledPack) -> Event | None:
    """An event that this permit rule allows, or None if the pack judges it otherwise."""
    p = pack.pack
    s = rule.scope
    kind = sorted(s.kinds, key=lambda k: k.value)[0] if s.kinds else EventKind.USE
    fields: dict[str, object] = {"categories": sorted(s.categories)[:1] if s.categories else sorted(p.categories)[:1]}
    for cond in rule.conditions:
        _satisfy(cond, fields, pack)
    recipient = None
    if kind is EventKind.DISCLOSURE:
        rtype = sorted(s.recipients)[0] if s.recipients else sorted(p.recipients)[0]
        recipient = Recipient(rtype, f"{rtype.replace('_', '-')}-1", "MY", fields.get("on_our_behalf", True))  # type: ignore[arg-type]
    purpose = sorted(s.purposes)[0] if s.purposes else sorted(p.purposes)[0]
    role = fields.get("role") or (sorted(p.roles)[0] if p.roles else "staff")
    e = Event(
        event_id="w", occurred_at=datetime(2026, 1, 1, tzinfo=UTC), kind=kind, policy_id=p.id,
        source_system=SYSTEMS[hash(rule.id) % len(SYSTEMS)],
        actor=Actor(fields.get("actor_type", ActorType.EMPLOYEE), "emp-1", str(role),  # type: ignore[arg-type]
                    fields.get("organisation", ActorOrganisation.OURS)),  # type: ignore[arg-type]
        subject=Subject("u-1", 34, None, "MY"), data_categories=tuple(fields["categories"]),  # type: ignore[arg-type]
        purpose=purpose, recipient=recipient,
        identifiability=fields.get("identifiability", Identifiability.IDENTIFIED),  # type: ignore[arg-type]
        legal_request=LegalRequest(fields.get("legal", LegalRequestType.NONE), "REF-1"),  # type: ignore[arg-type]
        consent=ConsentState(bool(fields.get("consent_marketing")), bool(fields.get("consent_third_party_sharing")),
                             bool(fields.get("consent_guardian"))),
        attributes=fields.get("attributes", {}),  # type: ignore[arg-type]
    )
    return e if evaluate(e, pack).verdict is Verdict.ALLOW else None


MUTATIONS: dict[str, Callable[[Event], Event]] = {
    "consent_withdrawn": lambda e: dataclasses.replace(
        e, consent=ConsentState(False, False, False, True)),
    "own_purposes": lambda e: dataclasses.replace(
        e, recipient=dataclasses.replace(e.recipient, on_our_behalf=False)) if e.recipient else e,
    "no_legal_request": lambda e: dataclasses.replace(e, legal_request=LegalRequest()),
    "undeclared_purpose": lambda e: dataclasses.replace(e, purpose="data_brokerage"),
    "minor_without_guardian": lambda e: dataclasses.replace(
        e, subject=dataclasses.replace(e.subject, age=15), consent=dataclasses.replace(e.consent, guardian=False)),
    "unsafe_transfer": lambda e: dataclasses.replace(e, transfer=Transfer(True, "US", Safeguard.NONE)),
    "wrong_role": lambda e: dataclasses.replace(e, actor=dataclasses.replace(e.actor, role="intern",
                                                                             type=ActorType.OTHER)),
    "identified_data": lambda e: dataclasses.replace(e, identifiability=Identifiability.IDENTIFIED,
                                                     consent=ConsentState()),
}


@dataclasses.dataclass
class Templates:
    compliant: list[Event]
    violating: list[tuple[str, Event]]


def templates(pack: CompiledPack) -> Templates:
    ok = [w for r in pack.pack.rules if r.effect is Effect.PERMIT and (w := witness(r, pack)) is not None]
    bad: list[tuple[str, Event]] = []
    seen: set[tuple[str, ...]] = set()
    for w in ok:
        for name, mutate in MUTATIONS.items():
            m = mutate(w)
            d = evaluate(m, pack)
            key = d.violated_rule_ids
            if d.verdict is Verdict.VIOLATION and key not in seen:
                seen.add(key)
                bad.append((name, m))
    return Templates(ok, bad)


MALFORMED = (b"not avro at all", b"\xc3\x01" + b"\x00" * 8 + b"\x02", b"{\"json\": \"instead of avro\"}")


def stream(packs: list[CompiledPack], *, seed: int = 7, violation_rate: float = 0.08,
           malformed_rate: float = 0.01, subjects: int = 5000,
           clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Iterator[Event | bytes]:
    """Endless mixed stream: Events (mostly compliant) and, now and then, malformed bytes."""
    rng = random.Random(seed)
    pools = [(p, templates(p)) for p in packs]
    pools = [(p, t) for p, t in pools if t.compliant]
    n = 0
    while True:
        n += 1
        roll = rng.random()
        if roll < malformed_rate:
            yield rng.choice(MALFORMED)
            continue
        _, t = rng.choice(pools)
        base = rng.choice(t.violating)[1] if roll < malformed_rate + violation_rate and t.violating \
            else rng.choice(t.compliant)
        yield dataclasses.replace(
            base, event_id=f"ev-{seed}-{n}", occurred_at=clock(),
            subject=dataclasses.replace(base.subject, id=f"u-{rng.randrange(subjects):05d}"),
            actor=dataclasses.replace(base.actor, id=f"emp-{rng.randrange(200):03d}"))


# ---------------------------------------------------------------- with a subject ledger

LEDGER_START = datetime(2026, 3, 1, tzinfo=UTC)


def _fact(kind: FactType, n: int, subject: str, at: datetime, scope: Scope | None = None) -> SubjectFact:
    return SubjectFact(f"fact-{n}", subject, kind, at, at + timedelta(seconds=2), _FACT_SOURCES[kind], scope)


_FACT_SOURCES = {FactType.CONSENT_GRANTED: "consent-platform", FactType.CONSENT_WITHDRAWN: "consent-platform",
                 FactType.MARKETING_OPT_OUT: "preference-centre", FactType.ACCOUNT_CLOSED: "account-service"}


def marketing_variants(pack: CompiledPack, t: Templates) -> list[Event]:
    """Compliant events turned into marketing that claims the subject's consent (still allowed)."""
    out = []
    for e in t.compliant:
        for cats in (e.data_categories, ("marketing_data",)):
            m = dataclasses.replace(e, purpose="marketing", data_categories=cats,
                                    consent=ConsentState(True, e.consent.third_party_sharing, e.consent.guardian))
            if evaluate(m, pack).verdict is Verdict.ALLOW:
                out.append(m)
    return out


def ledger_stream(packs: list[CompiledPack] | None = None, *, seed: int = 7, events: int = 1000,
                  subjects: int = 200, step: timedelta = timedelta(minutes=1), subject_prefix: str = "u-",
                  start: datetime = LEDGER_START) -> tuple[list[Event], list[SubjectFact]]:
    """Compliant events (allowed on their own claims; many are marketing that claims consent) and
    the subjects' facts from the systems of record: marketing consent granted, then for some
    subjects withdrawn, a marketing opt-out, or the account closed, at a time inside the events'
    span. The events after such a fact are the violations only a ledger sees. Deterministic for a
    seed; times from ``start``, one event per ``step``."""
    from auditor.policy import load_pack

    packs = packs if packs is not None else [load_pack(p) for p in ("ipasar", "inper", "waimaotong")]
    rng = random.Random(seed)
    pools = [pool for p in packs if (pool := [*(t := templates(p)).compliant, *marketing_variants(p, t)])]
    span = step * events
    facts: list[SubjectFact] = []
    for i in range(subjects):
        subject = f"{subject_prefix}{i:05d}"
        facts.append(_fact(FactType.CONSENT_GRANTED, len(facts), subject, start - timedelta(days=30),
                           Scope("marketing")))
        roll = rng.random()
        at = start + span * rng.random()
        if roll < 0.15:
            facts.append(_fact(FactType.CONSENT_WITHDRAWN, len(facts), subject, at, Scope("marketing")))
        elif roll < 0.25:
            facts.append(_fact(FactType.MARKETING_OPT_OUT, len(facts), subject, at, Scope("marketing")))
        elif roll < 0.32:
            facts.append(_fact(FactType.ACCOUNT_CLOSED, len(facts), subject, at))
    out = []
    for n in range(events):
        base = rng.choice(rng.choice(pools))
        out.append(dataclasses.replace(
            base, event_id=f"lev-{seed}-{n}", occurred_at=start + step * n,
            subject=dataclasses.replace(base.subject, id=f"{subject_prefix}{rng.randrange(subjects):05d}"),
            actor=dataclasses.replace(base.actor, id=f"emp-{rng.randrange(200):03d}")))
    return out, facts
