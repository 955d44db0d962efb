"""The ledger join: what the subject ledger says, as of the event's time, before the pack judges it.

Pure: no store, no clock. The caller gives a :class:`~auditor.ledger.asof.SubjectView` (the
subject's facts as of ``occurred_at``, from the store or from a record's own ledger reads) and the
evaluator; the policy engine is not changed. For each event:

1. **overlay**: the facts the pack reads that the ledger can answer are replaced by its answers.

   ==================================  ===================================================
   ``consent.marketing``               consent for purpose ``marketing`` (to the recipient, if any)
   ``consent.third_party_sharing``     consent for the event's purpose, to its recipient (disclosures)
   ``consent.guardian``                guardian consent for the event's purpose and recipient
   ``consent.marketing_opt_out``       opted out of ``marketing`` (to the recipient, if any)
   ``subject.age`` (so ``minor``)      whole years from the birth date to the event's UTC date
   ``attributes.service_active``       a service covering the purpose and recipient is running
   ``attributes.account_closed``       the account is closed
   ``attributes.deletion_requested``   deletion was requested and not cancelled
   ``attributes.guardian_deletion_requested``  the same, while the subject is a minor
   ==================================  ===================================================

   Where the ledger has no fact in force, the event's own value stands (the ledger may be fed by
   some systems of record and not others); only questions the pack reads are asked.
2. **judge** the overlaid event with the pack, unchanged;
3. **claims**: each permissive claim of the event that a fact in force contradicts (see
   :mod:`auditor.ledger.claims`) is a violation of kind ``CLAIM_CONTRADICTED``, citing the pack's
   clause for that consent (the most specific rule in scope that reads it; else the first rule of
   the pack that does; else the pack's default clause);
4. **provenance**: the answers that facts gave, with the facts' offsets, become the record's
   ``ledger`` field (:class:`~auditor.trail.record.LedgerFacts`). :class:`RecordedView` answers
   from those reads alone, so re-judging a record reproduces its decision without the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from typing import NamedTuple

from auditor.events.model import ConsentState, Event
from auditor.ledger.asof import SubjectView
from auditor.ledger.claims import MARKETING, Contradiction, contradicted_claims
from auditor.ledger.model import UNKNOWN, FactRef, Family, Query, Reading
from auditor.policy.conditions import Consent, Derived, FactIn, NotOptedOut, subject_minor
from auditor.policy.decision import Decision, RuleRef, Verdict, Violation, ViolationKind
from auditor.policy.engine import CompiledPack
from auditor.policy.model import Rule
from auditor.trail.record import CorrectedRecord, LedgerFacts, LedgerRead

#: event attributes the join fills from the ledger when the pack reads them
ATTRIBUTES: dict[str, Family] = {
    "service_active": Family.SERVICE_ACTIVE,
    "account_closed": Family.ACCOUNT_CLOSED,
    "deletion_requested": Family.DELETION_REQUESTED,
    "guardian_deletion_requested": Family.DELETION_REQUESTED,
}
_FAMILIES = {f.value: f for f in Family}


class Needs(NamedTuple):
    """What a pack reads that the ledger can answer."""

    consent: bool
    minor: bool
    attributes: tuple[str, ...]


def needs_of(compiled: CompiledPack) -> Needs:
    reads = compiled.reads
    # conditions name the flag they read ("consent.marketing", ...); older engines read "consent"
    return Needs(any(r == "consent" or r.startswith("consent.") for r in reads), "subject.minor" in reads,
                 tuple(a for a in ATTRIBUTES if f"attributes.{a}" in reads))


def _text(value: bool | int | date | None) -> str:
    return "true" if value else "false"


def overlay(e: Event, view: SubjectView, needs: Needs, minor_age: int) -> Event:
    """``e`` with the ledger's answers in place of its own claims (see the module's table)."""
    rtype = e.recipient.type if e.recipient is not None else None
    rid = e.recipient.id if e.recipient is not None else None
    changes: dict[str, object] = {}
    if needs.consent:
        c = e.consent
        marketing = view.consent(MARKETING, rtype, rid).value
        sharing = view.consent(e.purpose, rtype, rid).value if e.recipient is not None else None
        guardian = view.guardian_consent(e.purpose, rtype, rid).value
        opted_out = view.opted_out(MARKETING, rtype, rid).value
        new = ConsentState(c.marketing if marketing is None else bool(marketing),
                           c.third_party_sharing if sharing is None else bool(sharing),
                           c.guardian if guardian is None else bool(guardian),
                           c.marketing_opt_out if opted_out is None else bool(opted_out))
        if new != c:
            changes["consent"] = new
    subject = e.subject
    if needs.minor or "guardian_deletion_requested" in needs.attributes:
        age = view.age().value
        if isinstance(age, int) and not isinstance(age, bool):
            subject = replace(subject, age=age, is_minor=None)
            if subject != e.subject:
                changes["subject"] = subject
    if needs.attributes:
        attributes = dict(e.attributes)
        for name in needs.attributes:
            family = ATTRIBUTES[name]
            if family is Family.SERVICE_ACTIVE:
                value = view.service_active(e.purpose, rtype, rid).value
            else:
                value = view.ask(Query(family)).value
            if value is None:
                continue  # the ledger is silent: the event's own attribute stands
            if name == "guardian_deletion_requested" and value and subject.minor(minor_age) is not True:
                continue  # a request on record, but not a minor's: not the guardian's (waimaotong F)
            attributes[name] = _text(value)
        if attributes != dict(e.attributes):
            changes["attributes"] = attributes
    return replace(e, **changes) if changes else e  # type: ignore[arg-type]


# ---------------------------------------------------------------- which clause a contradiction cites

def _walk(cond: object) -> Iterator[object]:
    yield cond
    inner = getattr(cond, "inner", None)
    if inner is not None:
        yield from _walk(inner)
    for attr in ("options", "parts"):
        for c in getattr(cond, attr, ()) or ():
            yield from _walk(c)


def _reads_claim(rule: Rule, claim: str) -> bool:
    for top in (*rule.scope.tests, *rule.conditions):
        for c in _walk(top):
            if claim.startswith("consent.") and claim != "consent.marketing_opt_out":
                if isinstance(c, Consent) and c.flag == claim.removeprefix("consent."):
                    return True
            elif claim == "consent.marketing_opt_out":
                if isinstance(c, NotOptedOut):
                    return True
            elif isinstance(c, FactIn) and c.fact == "subject.minor":
                return True
    return False


class PackJoin:
    """The join for one compiled pack: what it needs from the ledger, and whom a contradiction cites."""

    def __init__(self, compiled: CompiledPack) -> None:
        self.compiled = compiled
        self.needs = needs_of(compiled)
        self._cites: dict[str, RuleRef] = {}                 # claim -> the pack's first rule reading it
        self._reads_memo: dict[tuple[str, str], bool] = {}   # (rule id, claim) -> the rule reads it

    def cite(self, e: Event, claim: str) -> RuleRef:
        """The clause a contradicted ``claim`` of ``e`` (the event as the pack judged it) cites: the most
        specific rule whose whole scope holds for ``e`` that reads the claim; else the first rule of the
        pack that reads it; else the pack's default clause. The whole scope (attlg): a rule indexed under
        the event's kind, recipient type and purpose whose other tests fail (thisproduct 2.A's "after the
        end of the service", for a service that has not ended) is not in scope."""
        in_scope = [r for r in self._in_scope(e) if self._reads(r, claim)]
        if in_scope:
            return max(in_scope, key=lambda r: r.specificity).ref  # max keeps the first of equals
        hit = self._cites.get(claim)
        if hit is None:
            hit = self._cites[claim] = self._first(claim)
        return hit

    def _in_scope(self, e: Event) -> list[Rule]:
        """The rules whose scope holds for ``e``, as the engine decides it: its plan's entries (their
        static tests held) whose tests left hold too."""
        pack = self.compiled.pack
        plan = self.compiled.plan(e)
        x = Derived(plan.atoms, subject_minor(e.subject, pack.minor_age) if plan.needs_minor else None,
                    pack.minor_age)
        return [en.rule for en in (*plan.permits, *plan.constraints) if all(t.holds(e, x) for t in en.scope)]

    def _reads(self, rule: Rule, claim: str) -> bool:
        key = (rule.id, claim)
        hit = self._reads_memo.get(key)
        if hit is None:
            hit = self._reads_memo[key] = _reads_claim(rule, claim)
        return hit

    def _first(self, claim: str) -> RuleRef:
        pack = self.compiled.pack
        for rule in pack.rules:
            if _reads_claim(rule, claim):
                return rule.ref
        return RuleRef(f"{pack.id}.ledger.claim-contradicted", pack.default.clause, pack.default.quote, "high")

    def judge(self, e: Event, view: SubjectView, evaluate: Callable[[Event], Decision]) -> Judged:
        """Judge ``e`` with the ledger's facts as of its time (``view``); see the module docstring."""
        minor_age = self.compiled.pack.minor_age
        judged = overlay(e, view, self.needs, minor_age)
        decision = evaluate(judged)
        found = contradicted_claims(e, view, minor_age)
        if found:
            extra = tuple(self._violation(judged, c) for c in found)  # cited by the event the pack judged
            decision = decision._replace(verdict=Verdict.VIOLATION, violations=decision.violations + extra)
        return Judged(decision, ledger_facts(view), tuple(view.reads), found)

    def _violation(self, e: Event, c: Contradiction) -> Violation:
        facts = ", ".join(str(r) for r in c.refs)
        return Violation(self.cite(e, c.claim), ViolationKind.CLAIM_CONTRADICTED,
                         f"{c.reason()} (ledger fact {facts})", (c.claim,))


class Judged(NamedTuple):
    decision: Decision
    ledger: LedgerFacts                           # for the audit record
    reads: tuple[tuple[Query, Reading], ...]      # for the late-fact index
    contradictions: tuple[Contradiction, ...]


# ---------------------------------------------------------------- provenance and replay

def _stored(value: bool | int | date | None) -> bool | str | None:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool) or value is None:
        return value
    raise TypeError(f"the ledger answered with {type(value).__name__}")


def ledger_facts(view: SubjectView, corrects: CorrectedRecord | None = None) -> LedgerFacts:
    """The record's ``ledger`` field: every question a fact answered, once, with the facts."""
    seen: dict[tuple[str, str | None, str | None, str | None], LedgerRead] = {}
    for q, r in view.reads:
        key = (q.family.value, q.purpose, q.recipient_type, q.recipient_id)
        if r.value is None or key in seen:
            continue
        seen[key] = LedgerRead(*key, _stored(r.value), tuple(sorted({ref.offset for ref in r.refs})))
    return LedgerFacts(view.partition, view.through_offset, tuple(seen.values()), corrects)


class RecordedView(SubjectView):
    """A subject view that answers from a record's ledger reads: re-judging reproduces the decision."""

    __slots__ = ("_answers",)

    def __init__(self, lf: LedgerFacts, at: object) -> None:
        super().__init__((), at, partition=lf.partition, through_offset=lf.through_offset)  # type: ignore[arg-type]
        self._answers: dict[Query, Reading] = {}
        for r in lf.reads:
            value: bool | date | None = date.fromisoformat(r.value) if isinstance(r.value, str) else r.value
            q = Query(_FAMILIES[r.question], r.purpose, r.recipient_type, r.recipient_id)
            self._answers[q] = Reading(value, tuple(FactRef(lf.partition, o) for o in r.fact_offsets))

    def ask(self, q: Query) -> Reading:
        reading = self._answers.get(q, UNKNOWN)
        self.reads.append((q, reading))
        return reading


def rejudge(e: Event, lf: LedgerFacts, compiled: CompiledPack,
            evaluate: Callable[[Event, CompiledPack], Decision]) -> Decision:
    """``e`` judged again under ``compiled`` with the ledger answers its record stored (what-if, replay)."""
    return PackJoin(compiled).judge(e, RecordedView(lf, e.occurred_at), lambda ev: evaluate(ev, compiled)).decision
