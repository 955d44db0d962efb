"""Compile a pack to lookup tables and judge events against it.

Permits and constraints are indexed by (kind, recipient type, purpose), with ``*`` for "any".
Judging an event looks up the candidate rules for its key once (the merged candidate lists are
cached per key), so the cost of a decision depends on the rules that could apply to that event,
not on the size of the pack. :func:`evaluate` is pure: no I/O, no clock.

An event is allowed when no constraint in scope fails and some permit in scope holds. When no
permit holds, only the most specific permit that was in scope is reported as violated (the
others are kept as ``considered``); every failed constraint is reported. Violations are listed
most specific rule first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from auditor.events.model import Event, EventKind
from auditor.policy.conditions import Condition, Derived
from auditor.policy.decision import Decision, RuleRef, Verdict, Violation, ViolationKind
from auditor.policy.loader import parse_pack, resolve_pack
from auditor.policy.model import Effect, Pack, Rule

ANY = "*"
_Key = tuple[EventKind, str, str]


#: Facts that are part of a plan's key: a test reading only these is decided when the plan is made.
STATIC_FACTS = frozenset({"kind", "purpose", "recipient.type", "data_categories"})
_CACHE_MAX = 65_536
_CACHEABLE_CATEGORIES = 16
#: the memo keeps a decision only when every free-text fact in its key is at most this long
_MEMO_MAX_TEXT = 64


class _Entry:
    """A candidate rule of a plan: the tests left to check per event, and what already failed."""

    __slots__ = ("rule", "ref", "scope", "conditions", "broken")

    def __init__(self, rule: Rule, scope: tuple[Condition, ...], conditions: tuple[Condition, ...],
                 broken: tuple[Condition, ...]) -> None:
        self.rule, self.ref, self.scope, self.conditions, self.broken = rule, rule.ref, scope, conditions, broken


class _Plan:
    """What an event's (kind, recipient type, purpose, categories) decide, computed once per such key."""

    __slots__ = ("undeclared", "atoms", "permits", "constraints")

    def __init__(self, undeclared: tuple[Violation, ...], atoms: frozenset[str], permits: tuple[_Entry, ...],
                 constraints: tuple[_Entry, ...]) -> None:
        self.undeclared, self.atoms, self.permits, self.constraints = undeclared, atoms, permits, constraints


@dataclass(slots=True)
class CompiledPack:
    pack: Pack
    index: dict[_Key, list[tuple[int, Rule]]]
    _cache: dict[_Key, tuple[tuple[Rule, ...], tuple[Rule, ...]]] = field(default_factory=dict)
    _plans: dict[tuple[object, ...], _Plan] = field(default_factory=dict)
    reads: frozenset[str] = frozenset()
    reads_minor: bool = False

    @property
    def id(self) -> str:
        return self.pack.id

    @property
    def content_hash(self) -> str:
        return self.pack.content_hash

    def candidates(self, kind: EventKind, rtype: str, purpose: str) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
        """(permits, constraints) whose kind/recipient/purpose scope covers this key, in pack order."""
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
               tuple(r for r in ordered if r.effect is Effect.CONSTRAINT))
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = hit
        return hit

    def plan(self, e: Event) -> _Plan:
        """The plan for an event's static facts: made once per key, then looked up (bounded cache)."""
        rtype = e.recipient.type if e.recipient is not None else ANY
        key = (e.kind, rtype, e.purpose, e.data_categories)
        hit = self._plans.get(key)
        if hit is None:
            hit = self._make_plan(e, rtype)
            # only declared names (a bounded vocabulary) in short lists are kept: hostile events naming
            # huge undeclared categories or thousands of repeats cannot grow the cache by their size
            if not hit.undeclared and len(e.data_categories) <= _CACHEABLE_CATEGORIES:
                if len(self._plans) >= _CACHE_MAX:
                    self._plans.clear()
                self._plans[key] = hit
        return hit

    def _make_plan(self, e: Event, rtype: str) -> _Plan:
        pack = self.pack
        undeclared = tuple(_undeclared(e, pack))
        if undeclared:
            return _Plan(undeclared, frozenset(), (), ())
        atoms = frozenset().union(*(pack.atoms[c] for c in e.data_categories))
        x = Derived(atoms, None, pack.minor_age)
        permits, constraints = self.candidates(e.kind, rtype, e.purpose)

        def entries(rules: tuple[Rule, ...]) -> tuple[_Entry, ...]:
            out = []
            for rule in rules:
                if not all(t.holds(e, x) for t in rule.scope.tests if t.reads <= STATIC_FACTS):
                    continue
                scope = tuple(t for t in rule.scope.tests if not t.reads <= STATIC_FACTS)
                conds = tuple(t for t in rule.conditions if not t.reads <= STATIC_FACTS)
                broken = tuple(t for t in rule.conditions if t.reads <= STATIC_FACTS and not t.holds(e, x))
                out.append(_Entry(rule, scope, conds, broken))
            return tuple(out)

        return _Plan((), atoms, entries(permits), entries(constraints))


def compile_pack(pack: Pack) -> CompiledPack:
    index: dict[_Key, list[tuple[int, Rule]]] = {}
    reads: set[str] = set()
    for order, rule in enumerate(pack.rules):
        kinds = rule.scope.kinds or frozenset(EventKind)
        recipients = rule.scope.recipients or {ANY}
        purposes = rule.scope.purposes or {ANY}
        for kind in kinds:
            for rtype in recipients:
                for purpose in purposes:
                    index.setdefault((kind, rtype, purpose), []).append((order, rule))
        for cond in (*rule.scope.tests, *rule.conditions):
            reads |= cond.reads
    return CompiledPack(pack, index, reads=frozenset(reads), reads_minor="subject.minor" in reads)


def load_pack(name_or_path: str | Path) -> CompiledPack:
    """Load, lint and compile a bundled pack by id or a pack file by path."""
    return compile_pack(parse_pack(resolve_pack(name_or_path)))


def _undeclared(e: Event, pack: Pack) -> list[Violation]:
    out = []
    unknown = [cat for cat in e.data_categories if cat not in pack.atoms]
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


def describe(e: Event) -> str:
    what = f"{e.kind.value} of {', '.join(e.data_categories)} for {e.purpose}"
    if e.recipient is not None:
        what += f" to {e.recipient.type}"
    return what


def _violation(rule: Rule, kind: ViolationKind, e: Event, x: Derived, broken: list[Condition]) -> Violation:
    why = "; ".join(cond.reason(e, x) for cond in broken)
    if kind is ViolationKind.PROHIBITED:
        reason = rule.explain or f"prohibited: {describe(e)}"
    elif kind is ViolationKind.CONSTRAINT_FAILED:
        reason = f"{rule.explain or describe(e) + ' breaks this constraint'} ({why})"
    else:
        reason = f"{rule.explain} ({why})" if rule.explain else why
    return Violation(rule.ref, kind, reason, tuple(cond.source for cond in broken))


def evaluate(e: Event, compiled: CompiledPack) -> Decision:
    """Judge one event against a compiled pack."""
    pack = compiled.pack
    plan = compiled.plan(e)
    if plan.undeclared:
        return Decision(e.event_id, Verdict.VIOLATION, plan.undeclared, None, pack.id, pack.content_hash)
    x = Derived(plan.atoms, e.subject.minor(pack.minor_age) if compiled.reads_minor else None, pack.minor_age)
    held: list[str] = []
    permitted_by: RuleRef | None = None
    failed_entries: list[_Entry] = []
    for entry in plan.permits:
        for test in entry.scope:
            if not test.holds(e, x):
                break
        else:
            if entry.broken:
                failed_entries.append(entry)
                continue
            for cond in entry.conditions:
                if not cond.holds(e, x):
                    failed_entries.append(entry)
                    break
            else:
                if permitted_by is None:
                    permitted_by = entry.ref
                held.append(entry.rule.id)
    found: list[tuple[float, Violation]] = []
    considered: tuple[Violation, ...] = ()
    if permitted_by is None:
        failed = [(f.rule, [*f.broken, *(c for c in f.conditions if not c.holds(e, x))]) for f in failed_entries]
        if failed:
            failed.sort(key=lambda rb: (-rb[0].specificity, len(rb[1])))
            best = failed[0]
            found.append((best[0].specificity, _violation(best[0], ViolationKind.CONDITION_FAILED, e, x, best[1])))
            considered = tuple(_violation(r, ViolationKind.CONDITION_FAILED, e, x, b) for r, b in failed[1:])
        else:
            found.append((-1.0, Violation(pack.synthetic["default-deny"], ViolationKind.DEFAULT_DENY,
                                          f"no clause of this policy permits {describe(e)}")))
    for entry in plan.constraints:
        for test in entry.scope:
            if not test.holds(e, x):
                break
        else:
            rule = entry.rule
            if rule.forbid:
                found.append((rule.specificity, _violation(rule, ViolationKind.PROHIBITED, e, x, [])))
                continue
            broken = [*entry.broken, *(c for c in entry.conditions if not c.holds(e, x))]
            if broken:
                found.append((rule.specificity, _violation(rule, ViolationKind.CONSTRAINT_FAILED, e, x, broken)))
            else:
                held.append(rule.id)
    if not found:
        return Decision(e.event_id, Verdict.ALLOW, (), permitted_by, pack.id, pack.content_hash, tuple(held))
    if len(found) > 1:
        found.sort(key=lambda sv: -sv[0])
    return Decision(e.event_id, Verdict.VIOLATION, tuple(v for _, v in found), permitted_by, pack.id,
                    pack.content_hash, tuple(held), considered)


def _key_getters(compiled: CompiledPack) -> tuple[Callable[[Event], object], ...]:
    """Readers of every fact beyond the fixed ones that a rule, condition or reason of this pack reads."""
    minor_age = compiled.pack.minor_age
    getters: list[Callable[[Event], object]] = []
    reads = compiled.reads
    if "recipient.id" in reads:
        getters.append(lambda e: None if e.recipient is None else e.recipient.id)
    if "legal_basis" in reads:
        getters.append(lambda e: e.legal_basis)
    if "subject.minor" in reads:
        getters.append(lambda e: e.subject.minor(minor_age))
    for name in sorted(f.removeprefix("attributes.") for f in reads if f.startswith("attributes.")):
        getters.append(lambda e, name=name: e.attributes.get(name))  # type: ignore[misc]
    return tuple(getters)


def _small(e: Event) -> bool:
    """Whether an event's memo key (and the decision it maps to) is small enough to keep: the memo is
    bounded in entries, so each entry must be bounded in bytes."""
    if len(e.data_categories) > _CACHEABLE_CATEGORIES or len(e.purpose) > _MEMO_MAX_TEXT:
        return False
    r = e.recipient
    texts = (e.actor.role, e.subject.region, e.legal_basis, *e.data_categories,
             *(() if r is None else (r.type, r.id, r.country)), e.transfer.destination_country,
             *e.attributes.values())
    return all(t is None or len(t) <= _MEMO_MAX_TEXT for t in texts)


class MemoEvaluator:
    """``evaluate`` with a bounded memo keyed on exactly the facts rules and reasons can read.

    Real streams repeat the same kinds of processing over and over; the memo turns most
    decisions into one tuple build and one dictionary lookup. It is dropped when full, so
    memory stays bounded. Returns (decision, template): the template is shared by every event
    with the same facts, so callers can cache work derived from it (see the stream processor).
    Ids, times, the source system and free attributes no rule reads are not in the key.
    """

    def __init__(self, compiled: CompiledPack, max_entries: int = 50_000) -> None:
        self.compiled = compiled
        self.max_entries = max_entries
        self._memo: dict[tuple[object, ...], Decision] = {}
        self._extra = _key_getters(compiled)

    def fact_key(self, e: Event) -> tuple[object, ...]:
        r = e.recipient
        a = e.actor
        return (e.kind, e.data_categories, e.purpose,
                None if r is None else (r.type, r.country, r.on_our_behalf),
                e.identifiability, e.legal_request.type, e.consent, e.subject.region, e.transfer,
                a.type, a.role, a.organisation,
                *(get(e) for get in self._extra))

    def __call__(self, e: Event) -> tuple[Decision, Decision]:
        key = self.fact_key(e)
        template = self._memo.get(key)
        if template is None:
            template = evaluate(e, self.compiled)
            if _small(e):
                if len(self._memo) >= self.max_entries:
                    self._memo.clear()
                self._memo[key] = template
        if template.event_id == e.event_id:
            return template, template
        t = template
        return Decision(e.event_id, t.verdict, t.violations, t.permitted_by, t.pack_id, t.pack_hash, t.held,
                        t.considered), t
