"""Compile a pack to lookup tables and judge events against it.

Rules are indexed by (kind, recipient type, purpose), with ``*`` for "any". Judging an event
looks up the candidate rules for its key once (the merged candidate list is cached per key),
so the cost of a decision depends on the rules that could apply to that event, not on the
size of the pack. :func:`evaluate` is pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from auditor.events.model import Event, EventKind
from auditor.policy.decision import Decision, RuleRef, Verdict, Violation, ViolationKind
from auditor.policy.loader import parse_pack, resolve_pack
from auditor.policy.model import Effect, Pack, Rule

ANY = "*"
_Key = tuple[EventKind, str, str]


@dataclass(slots=True)
class CompiledPack:
    pack: Pack
    index: dict[_Key, list[tuple[int, Rule]]]
    _cache: dict[_Key, tuple[tuple[Rule, ...], tuple[Rule, ...]]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.pack.id

    @property
    def content_hash(self) -> str:
        return self.pack.content_hash

    def candidates(self, kind: EventKind, rtype: str, purpose: str) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
        """(permits, prohibitions) whose kind/recipient/purpose scope covers this key, in pack order."""
        key = (kind, rtype, purpose)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found: dict[int, Rule] = {}
        for k in ((kind, rtype, purpose), (kind, ANY, purpose), (kind, rtype, ANY), (kind, ANY, ANY)):
            for order, rule in self.index.get(k, ()):
                found[order] = rule
        ordered = [found[i] for i in sorted(found)]
        hit = (tuple(r for r in ordered if r.effect is Effect.PERMIT),
               tuple(r for r in ordered if r.effect is Effect.PROHIBIT))
        self._cache[key] = hit
        return hit


def compile_pack(pack: Pack) -> CompiledPack:
    index: dict[_Key, list[tuple[int, Rule]]] = {}
    for order, rule in enumerate(pack.rules):
        kinds = rule.scope.kinds or frozenset(EventKind)
        recipients = rule.scope.recipients or {ANY}
        purposes = rule.scope.purposes or {ANY}
        for kind in kinds:
            for rtype in recipients:
                for purpose in purposes:
                    index.setdefault((kind, rtype, purpose), []).append((order, rule))
    return CompiledPack(pack, index)


def load_pack(name_or_path: str | Path) -> CompiledPack:
    """Load, lint and compile a bundled pack by id or a pack file by path."""
    return compile_pack(parse_pack(resolve_pack(name_or_path)))


def _residual_match(rule: Rule, e: Event, minor_age: int) -> bool:
    s = rule.scope
    if s.categories is not None and not any(cat in s.categories for cat in e.data_categories):
        return False
    if s.minor is not None and e.subject.minor(minor_age) != s.minor:
        return False
    if s.regions is not None and (e.subject.region or "").upper() not in s.regions:
        return False
    return s.cross_border is None or e.transfer.cross_border == s.cross_border


def _undeclared(e: Event, pack: Pack) -> list[Violation]:
    out = []
    unknown = [cat for cat in e.data_categories if cat not in pack.categories]
    if unknown:
        out.append(Violation(pack.synthetic["undeclared-category"], ViolationKind.UNDECLARED,
                             f"category {', '.join(unknown)} is not declared by this policy"))
    if e.purpose not in pack.purposes:
        out.append(Violation(pack.synthetic["undeclared-purpose"], ViolationKind.UNDECLARED,
                             f"purpose {e.purpose} is not declared by this policy"))
    if e.recipient is not None and e.recipient.type not in pack.recipients:
        out.append(Violation(pack.synthetic["undeclared-recipient"], ViolationKind.UNDECLARED,
                             f"recipient type {e.recipient.type} is not one this policy discloses to"))
    return out


def _describe(e: Event) -> str:
    what = f"{e.kind.value} of {', '.join(e.data_categories)} for {e.purpose}"
    if e.recipient is not None:
        what += f" to {e.recipient.type}"
    return what


def evaluate(e: Event, compiled: CompiledPack) -> Decision:
    """Judge one event against a compiled pack."""
    pack = compiled.pack
    undeclared = _undeclared(e, pack)
    if undeclared:
        return Decision(e.event_id, Verdict.VIOLATION, tuple(undeclared), None, pack.id, pack.content_hash)
    minor_age = pack.minor_age
    rtype = e.recipient.type if e.recipient is not None else ANY
    permits, prohibitions = compiled.candidates(e.kind, rtype, e.purpose)
    violations: list[Violation] = []
    held: list[str] = []
    permitted_by: RuleRef | None = None
    failed: list[Violation] = []
    for rule in permits:
        if not _residual_match(rule, e, minor_age):
            continue
        broken = [cond for cond in rule.conditions if not cond.holds(e, minor_age)]
        if not broken:
            if permitted_by is None:
                permitted_by = rule.ref
            held.append(rule.id)
        else:
            why = "; ".join(cond.reason(e, minor_age) for cond in broken)
            reason = f"{rule.explain} ({why})" if rule.explain else why
            failed.append(Violation(rule.ref, ViolationKind.CONDITION_FAILED, reason))
    if permitted_by is None:
        if failed:
            violations.extend(failed)
        else:
            violations.append(Violation(pack.synthetic["default-deny"], ViolationKind.DEFAULT_DENY,
                                        f"no clause of this policy permits {_describe(e)}"))
    for rule in prohibitions:
        if not _residual_match(rule, e, minor_age):
            continue
        broken = [cond for cond in rule.conditions if not cond.holds(e, minor_age)]
        if rule.conditions and not broken:
            held.append(rule.id)
            continue
        why = "; ".join(cond.reason(e, minor_age) for cond in broken)
        reason = (rule.explain or f"prohibited: {_describe(e)}") + (f" ({why})" if why else "")
        violations.append(Violation(rule.ref, ViolationKind.PROHIBITED, reason))
    verdict = Verdict.VIOLATION if violations else Verdict.ALLOW
    return Decision(e.event_id, verdict, tuple(violations), permitted_by, pack.id, pack.content_hash,
                    tuple(held))


def fact_key(e: Event, minor_age: int) -> tuple[object, ...]:
    """Every fact of an event that a rule, a condition or a reason can read, and nothing else.

    Two events with equal keys get equal decisions (but for the event id), which is what
    :class:`MemoEvaluator` relies on. Ids, times and the recipient's name and country are not
    in it because no rule reads them.
    """
    r = e.recipient
    return (e.kind, e.data_categories, e.purpose, None if r is None else (r.type, r.on_our_behalf),
            e.identifiability, e.legal_request.type, e.consent, e.subject.minor(minor_age), e.subject.region,
            e.transfer.cross_border, e.transfer.safeguard, e.actor.type, e.actor.role,
            tuple(sorted(e.attributes.items())) if e.attributes else ())


class MemoEvaluator:
    """``evaluate`` with a bounded memo keyed by :func:`fact_key`, for high-volume streams.

    Real streams repeat the same kinds of processing over and over; the memo turns most
    decisions into one tuple build and one dictionary lookup. It is dropped when full, so
    memory stays bounded. Returns (decision, template): the template is shared by every event
    with the same facts, so callers can cache work derived from it (see the stream processor).
    """

    def __init__(self, compiled: CompiledPack, max_entries: int = 50_000) -> None:
        self.compiled = compiled
        self.max_entries = max_entries
        self._memo: dict[tuple[object, ...], Decision] = {}

    def __call__(self, e: Event) -> tuple[Decision, Decision]:
        key = fact_key(e, self.compiled.pack.minor_age)
        template = self._memo.get(key)
        if template is None:
            if len(self._memo) >= self.max_entries:
                self._memo.clear()
            template = self._memo[key] = evaluate(e, self.compiled)
        if template.event_id == e.event_id:
            return template, template
        t = template
        return Decision(e.event_id, t.verdict, t.violations, t.permitted_by, t.pack_id, t.pack_hash, t.held), t
