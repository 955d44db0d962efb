"""Compile a pack to lookup tables and judge events against it.

Permits and constraints are indexed by (kind, recipient type, purpose), with ``*`` for "any".
An event meets only the candidate rules of its key. For each (kind, recipient type, purpose,
categories) an event brings, a **plan** is made once: the candidates whose category tests already
fail are dropped, the tests its key decides are decided, and what is left per rule is the tests on
the other facts. The plan also knows which of those other facts its tests (and their reasons) read,
and keeps a bounded **memo** of decisions keyed on exactly those facts: an event whose facts were
seen before costs two dictionary lookups. :func:`evaluate` is pure (no I/O, no clock): the memo
only remembers what the plain evaluation gave, and the differential tests compare both.

An event is allowed when no constraint in scope fails and some permit in scope holds. When no
permit holds, only the most specific permit that was in scope is reported as violated (the
others are kept as ``considered``); every failed constraint is reported. Violations are listed
most specific rule first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from auditor.events.model import Event, EventKind
from auditor.policy.codegen import compile_fails, compile_plan
from auditor.policy.conditions import Condition, Derived, recipient_abroad, subject_minor
from auditor.policy.decision import Decision, RuleRef, Verdict, Violation, ViolationKind
from auditor.policy.loader import parse_pack, resolve_pack
from auditor.policy.model import Effect, Pack, Rule

ANY = "*"
_Key = tuple[EventKind, str, str]
_new_decision = tuple.__new__
_KeyFn = Callable[[Event], tuple[object, ...]]


#: Facts that are part of a plan's key: a test reading only these is decided when the plan is made.
STATIC_FACTS = frozenset({"kind", "purpose", "recipient.type", "data_categories"})
_CACHE_MAX = 65_536
_CACHEABLE_CATEGORIES = 16
#: bound of the memo key functions kept (one per distinct set of facts plans read: few per pack)
_KEY_FNS_MAX = 1024
#: bound of the ALLOW tails one compiled allow test keeps (one per set of rules that held together)
_ALLOW_TAILS_MAX = 256
#: a plan's tests are compiled at its this-many-th plain evaluation (before: the interpreted tests).
#: Compiling a plan costs about ten times making it; a plan an event stream meets once or twice (or
#: one never cached: undeclared names, long category lists) is not worth it.
_COMPILE_AFTER = 8
#: bounds of the reasons CompiledPack.reason keeps: per test, and how many tests
_REASONS_MAX = 32
_REASON_TESTS_MAX = 2048
#: bound of the bit sets of the fails test one plan keeps judged (see CompiledPack.judge)
_JUDGED_MAX = 64
#: the memo keeps a decision only when every free-text fact in its key is at most this long
_MEMO_MAX_TEXT = 64
#: default bound of one compiled pack's decision memo, in (estimated) bytes of keys and decisions
MEMO_BYTES = 32 * 1024 * 1024
#: an entry estimated above this is not kept
_MEMO_MAX_ENTRY = 4096
#: default bound of one compiled pack's plan cache, in (estimated) bytes: events can name any of
#: countless orders, repeats and mixes of declared categories, so plans are counted in bytes too
PLAN_BYTES = 16 * 1024 * 1024

#: How each fact a residual test reads is put in a memo key (``e`` the event, ``s`` its subject).
#: Enums go in by their value (a str, whose hash is cached: an Enum's own __hash__ is Python code).
_KEY_EXPR: dict[str, str] = {
    "recipient.id": "e.recipient.id",
    "recipient.country": "e.recipient.country",
    "recipient.on_our_behalf": "e.recipient.on_our_behalf",
    "identifiability": "e.identifiability._value_",
    "legal_request.type": "e.legal_request.type._value_",
    "legal_basis": "e.legal_basis",
    "actor.type": "e.actor.type._value_",
    "actor.role": "e.actor.role",
    "actor.organisation": "e.actor.organisation._value_",
    "actor.is_subject": "e.actor.id == s.id",
    "subject.minor": "_minor(s, {minor_age})",
    "subject.region": "s.region",
    "transfer.cross_border": "e.transfer.cross_border",
    "transfer.destination_country": "e.transfer.destination_country",
    "transfer.safeguard": "e.transfer.safeguard._value_",
    "recipient.abroad": "_abroad(e)",
    "consent.marketing": "e.consent.marketing",
    "consent.third_party_sharing": "e.consent.third_party_sharing",
    "consent.guardian": "e.consent.guardian",
    "consent.marketing_opt_out": "e.consent.marketing_opt_out",
    # the facts of a plan's key (STATIC_FACTS): only the keys of reasons read them (see reason)
    "kind": "e.kind._value_",
    "purpose": "e.purpose",
    "recipient.type": "e.recipient.type",
    "data_categories": "e.data_categories",
}
_RECIPIENT_FACTS = frozenset(f for f in _KEY_EXPR if f.startswith("recipient."))


class _Entry:
    """A candidate rule of a plan: the tests left to check per event, and what already failed."""

    __slots__ = ("rule", "ref", "scope", "conditions", "broken")

    def __init__(self, rule: Rule, scope: tuple[Condition, ...], conditions: tuple[Condition, ...],
                 broken: tuple[Condition, ...]) -> None:
        self.rule, self.ref, self.scope, self.conditions, self.broken = rule, rule.ref, scope, conditions, broken


class _Plan:
    """What an event's (kind, recipient type, purpose, categories) decide, computed once per such key.

    ``key_of`` reads the facts the remaining tests and their reasons read (None: a fact it cannot
    key); ``memo`` maps those facts to the decision (None: not memoised)."""

    __slots__ = ("undeclared", "atoms", "permits", "constraints", "key_of", "memo", "needs_minor", "allow",
                 "uses", "judged")

    def __init__(self, undeclared: tuple[Violation, ...], atoms: frozenset[str], permits: tuple[_Entry, ...],
                 constraints: tuple[_Entry, ...]) -> None:
        self.undeclared, self.atoms, self.permits, self.constraints = undeclared, atoms, permits, constraints
        self.key_of: Callable[[Event], tuple[object, ...]] | None = None
        self.memo: dict[tuple[object, ...], Decision] | None = None
        self.needs_minor = False
        #: the compiled allow test of the whole plan, shared by plans of the same rules (see _AllowCode)
        self.allow: _AllowCode | None = None
        self.uses = 0   # plain evaluations before the plan's tests are compiled (see _COMPILE_AFTER)
        #: what each bit set of the compiled fails test (see _AllowCode.fails) makes of this plan
        self.judged: dict[int, _Judged] = {}


class _AllowCode:
    """A plan's rules compiled into one allow test (codegen.compile_plan): ``test(e, atoms)`` is 0
    unless the event is allowed, else the bits of the rules that held. ``tails`` maps those bits to
    the rest of the ALLOW decision (permit, held rules): what the bits alone decide, so it is the
    same for every event (it is not keyed on any fact, and every test still runs for each event)."""

    __slots__ = ("test", "tails", "refs", "ids", "rules", "minor_age", "_fails", "layout")

    def __init__(self, permits: tuple[_Entry, ...], constraints: tuple[_Entry, ...], minor_age: int) -> None:
        self.rules = ([(p.scope, p.conditions, bool(p.broken), p.rule.forbid) for p in permits],
                      [(k.scope, k.conditions, bool(k.broken), k.rule.forbid) for k in constraints])
        self.minor_age = minor_age
        self.test = compile_plan(*self.rules, minor_age)
        self.tails: dict[int, tuple[object, ...]] = {}
        self.refs = tuple(p.ref for p in permits)
        self.ids = tuple(e.rule.id for e in (*permits, *constraints))
        self._fails: Callable[[Event, frozenset[str]], int] | None = None
        self.layout: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @property
    def fails(self) -> Callable[[Event, frozenset[str]], int]:
        """The compiled fails test (codegen.compile_fails), compiled at the shape's first violation."""
        fn = self._fails
        if fn is None:
            fn, self.layout = compile_fails(*self.rules, self.minor_age)
            self._fails = fn
        return fn

    def tail(self, bits: int, pack: Pack) -> tuple[object, ...]:
        """(verdict, violations, permitted_by, pack id, pack hash, held, considered) of an ALLOW."""
        hit = self.tails.get(bits)
        if hit is None:
            held = tuple(rid for i, rid in enumerate(self.ids) if bits >> i & 1)
            first = (bits & -bits).bit_length() - 1   # the lowest bit set: the first permit that held
            hit = (Verdict.ALLOW, (), self.refs[first], pack.id, pack.content_hash, held, ())
            if len(self.tails) < _ALLOW_TAILS_MAX:
                self.tails[bits] = hit
        return hit


@dataclass(slots=True)
class CompiledPack:
    pack: Pack
    index: dict[_Key, list[tuple[int, Rule]]]
    _cache: dict[_Key, tuple[tuple[Rule, ...], tuple[Rule, ...]]] = field(default_factory=dict)
    _plans: dict[tuple[object, ...], _Plan] = field(default_factory=dict)
    #: memo key functions by (facts, has a recipient): plans reading the same facts share one
    _key_fns: dict[tuple[frozenset[str], bool], Callable[[Event], tuple[object, ...]] | None] = field(
        default_factory=dict)
    reads: frozenset[str] = frozenset()
    reads_minor: bool = False
    #: bound of the decision memo, in estimated bytes (0 turns the memo off)
    memo_budget: int = MEMO_BYTES
    memo_bytes: int = 0
    #: bound of the plan cache, in estimated bytes (plans, their candidate entries and element sets)
    plan_budget: int = PLAN_BYTES
    plan_bytes: int = 0
    memo_hits: int = 0
    memo_misses: int = 0
    #: counts the times the memo was dropped (a shadow of it, stream/factpath.py, drops its copy then)
    memo_epoch: int = 0
    #: compiled allow tests by the plan's candidate rules (and which already failed on the key)
    _allow: dict[tuple[object, ...], _AllowCode] = field(default_factory=dict)
    #: reasons already written per test (see reason): by id, with the test kept alive alongside
    #: (key function for events with a recipient, without, reasons by key, the test)
    _reasons: dict[int, tuple[_KeyFn | None, _KeyFn | None, dict[tuple[object, ...], str], Condition]] = field(
        default_factory=dict)

    @property
    def id(self) -> str:
        return self.pack.id

    @property
    def content_hash(self) -> str:
        return self.pack.content_hash

    def candidates(self, kind: EventKind, rtype: str, purpose: str) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
        """(permits, constraints) whose kind/recipient/purpose scope covers this key, in pack order.

        An undeclared recipient type or purpose has exactly the candidates of ``*`` (rules index
        declared names only), so it is looked up as ``*``: event payloads never become cache keys."""
        pack = self.pack
        if rtype not in pack.recipients:
            rtype = ANY
        if purpose not in pack.purposes:
            purpose = ANY
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
        r = e.recipient
        rtype = ANY if r is None else r.type
        try:
            kind = e.kind._value_
        except AttributeError:   # a hand-built event (a plain string for its kind)
            kind = e.kind
        key = (kind, rtype, e.purpose, e.data_categories)
        hit = self._plans.get(key)
        if hit is None:
            hit = self._make_plan(e, rtype)
            # only declared names (a bounded vocabulary) in short lists are kept: hostile events naming
            # huge undeclared categories or thousands of repeats cannot grow the cache by their size
            if not hit.undeclared and len(e.data_categories) <= _CACHEABLE_CATEGORIES:
                size = _plan_bytes(key, hit)
                if len(self._plans) >= _CACHE_MAX or self.plan_bytes + size > self.plan_budget:
                    self._plans.clear()
                    self.memo_bytes = self.plan_bytes = 0
                    self.memo_epoch += 1
                self.plan_bytes += size
                if self.memo_budget > 0 and hit.key_of is not None:
                    hit.memo = {}
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
        reads: set[str] = set()

        def entries(rules: tuple[Rule, ...]) -> tuple[_Entry, ...]:
            out = []
            for rule in rules:
                if not all(t.holds(e, x) for t in rule.scope.tests if t.reads <= STATIC_FACTS):
                    continue
                scope = tuple(t for t in rule.scope.tests if not t.reads <= STATIC_FACTS)
                conds = tuple(t for t in rule.conditions if not t.reads <= STATIC_FACTS)
                broken = tuple(t for t in rule.conditions if t.reads <= STATIC_FACTS and not t.holds(e, x))
                if rule.forbid:
                    conds = ()   # a prohibition's conditions are never weighed
                for t in (*scope, *conds):
                    reads.update(t.reads)
                out.append(_Entry(rule, scope, conds, broken))
            return tuple(out)

        plan = _Plan((), atoms, entries(permits), entries(constraints))
        plan.needs_minor = "subject.minor" in reads
        fn_key = (frozenset(reads - STATIC_FACTS), rtype != ANY)
        if fn_key in self._key_fns:
            plan.key_of = self._key_fns[fn_key]
        else:
            if len(self._key_fns) >= _KEY_FNS_MAX:
                self._key_fns.clear()
            plan.key_of = self._key_fns[fn_key] = _key_function(fn_key[0], fn_key[1], pack.minor_age)
        return plan

    def compile_plan(self, plan: _Plan) -> _AllowCode:
        """Compile a plan's tests (once it has been used ``_COMPILE_AFTER`` times): the plan's allow
        test (and, at its first violation, its fails test), shared by plans of the same candidate rules."""
        shape = (tuple((id(p.rule), bool(p.broken)) for p in plan.permits),
                 tuple((id(k.rule), bool(k.broken)) for k in plan.constraints))
        allow = self._allow.get(shape)
        if allow is None:
            if len(self._allow) >= _KEY_FNS_MAX:
                self._allow.clear()
            allow = self._allow[shape] = _AllowCode(plan.permits, plan.constraints, self.pack.minor_age)
        plan.allow = allow
        return allow

    def judge(self, plan: _Plan, allow: _AllowCode, sig: int, has_recipient: bool) -> _Judged:
        """What a bit set of the plan's fails test decides, as _decide_interpreted would decide it
        for an event whose tests gave those bits (kept per plan: which conditions failed on the
        plan's key alone is the plan's own)."""
        layout = allow.layout
        held: list[str] = []
        permitted_by: RuleRef | None = None
        failed: list[tuple[Rule, list[Condition]]] = []
        n = len(plan.permits)
        for entry, (scope_bit, cond_bits) in zip(plan.permits, layout[:n], strict=True):
            if not sig & scope_bit:
                continue
            bad = [cond for cond, bit in zip(entry.conditions, cond_bits, strict=True) if sig & bit]
            if entry.broken or bad:
                failed.append((entry.rule, [*entry.broken, *bad]))
            else:
                if permitted_by is None:
                    permitted_by = entry.ref
                held.append(entry.rule.id)
        broken_constraints: list[tuple[Rule, ViolationKind, list[Condition]]] = []
        for entry, (scope_bit, cond_bits) in zip(plan.constraints, layout[n:], strict=True):
            if not sig & scope_bit:
                continue
            rule = entry.rule
            if rule.forbid:
                broken_constraints.append((rule, ViolationKind.PROHIBITED, []))
                continue
            bad = [cond for cond, bit in zip(entry.conditions, cond_bits, strict=True) if sig & bit]
            if entry.broken or bad:
                broken_constraints.append((rule, ViolationKind.CONSTRAINT_FAILED, [*entry.broken, *bad]))
            else:
                held.append(rule.id)
        found: list[tuple[float, Rule | None, ViolationKind, list[Condition]]] = []
        considered: list[tuple[Rule, ViolationKind, list[Condition]]] = []
        if permitted_by is None:
            if failed:
                failed.sort(key=lambda rb: (-rb[0].specificity, len(rb[1])))
                best = failed[0]
                found.append((best[0].specificity, best[0], ViolationKind.CONDITION_FAILED, best[1]))
                considered = [(r, ViolationKind.CONDITION_FAILED, b) for r, b in failed[1:]]
            else:
                found.append((-1.0, None, ViolationKind.DEFAULT_DENY, []))
        for rule, kind, broken in broken_constraints:
            found.append((rule.specificity, rule, kind, broken))
        if len(found) > 1:
            found.sort(key=lambda sv: -sv[0])
        judged = _Judged([(r, k, b) for _, r, k, b in found], considered, permitted_by, tuple(held))
        reads = frozenset().union(*(cond.reads for cond in judged.conds)) - STATIC_FACTS
        judged.key_of = self._key_fn(reads, has_recipient)
        if len(plan.judged) < _JUDGED_MAX:
            plan.judged[sig] = judged
            self.plan_bytes += 200 + 64 * (len(found) + len(considered) + len(judged.conds))
        return judged

    def report(self, judged: _Judged, key: tuple[object, ...], e: Event, plan: _Plan,
               x: Derived | None = None) -> tuple[object, ...]:
        """(verdict, violations, permitted_by, pack id, pack hash, held, considered) of the decision
        ``judged`` makes for the event, written as _decide_interpreted writes it; kept in
        ``judged.tails`` under ``key`` (bounded: per bit set, and in length)."""
        pack = self.pack
        if x is None:
            x = Derived(plan.atoms, subject_minor(e.subject, pack.minor_age) if plan.needs_minor else None,
                        pack.minor_age)
        why: tuple[str, ...] = (tuple([self.reason(cond, e, x) for cond in judged.conds]) if judged.key_of is not None
                                else cast(tuple[str, ...], key))   # without a key function: the reasons are the key
        reasons = iter(why)

        def violation(rule: Rule | None, kind: ViolationKind, broken: list[Condition]) -> Violation:
            if rule is None:
                return Violation(pack.synthetic["default-deny"], ViolationKind.DEFAULT_DENY,
                                 f"no clause of this policy permits {describe(e)}")
            texts = {} if kind is ViolationKind.PROHIBITED else {id(cond): next(reasons) for cond in broken}
            return _violation(rule, kind, e, x, broken, lambda cond, e, x: texts[id(cond)])

        found = tuple([violation(*v) for v in judged.found])
        considered = tuple([violation(*v) for v in judged.considered])
        if found:
            tail: tuple[object, ...] = (Verdict.VIOLATION, found, judged.permitted_by, pack.id, pack.content_hash,
                                        judged.held, considered)
        else:   # the fails test found nothing the allow test refused: cannot happen if they agree
            tail = (Verdict.ALLOW, (), judged.permitted_by, pack.id, pack.content_hash, judged.held, ())
        keep = _keepable(key) if judged.key_of is not None else sum(map(len, why)) <= _MEMO_MAX_ENTRY
        if len(judged.tails) < _REASONS_MAX and keep:
            judged.tails[key] = tail
            self.plan_bytes += 200 + sum(map(len, why)) + sum(120 + len(v.reason) for v in (*found, *considered))
        return tail

    def reason(self, cond: Condition, e: Event, x: Derived) -> str:
        """``cond.reason(e, x)``, kept per value of the facts the test reads (a reason reads no
        others: the memo relies on the same), at most _REASONS_MAX per test and _REASON_TESTS_MAX
        tests, none with a text over _MEMO_MAX_TEXT characters or over _CACHEABLE_CATEGORIES
        categories; a test reading facts no key function knows is not kept. An event without a
        recipient is keyed without the recipient facts (None for all such events; the key is then
        shorter, so it never equals the key of an event with a recipient)."""
        slot = self._reasons.get(id(cond))
        if slot is None:
            if len(self._reasons) >= _REASON_TESTS_MAX:
                self._reasons.clear()
            reads = cond.reads
            slot = self._reasons[id(cond)] = (self._key_fn(reads, True), self._key_fn(reads, False), {}, cond)
        fn = slot[0] if e.recipient is not None else slot[1]
        if fn is None:
            return cond.reason(e, x)
        try:
            key = fn(e)
        except AttributeError:   # a hand-built event (plain strings for enums)
            return cond.reason(e, x)
        kept = slot[2]
        hit = kept.get(key)
        if hit is None:
            hit = cond.reason(e, x)
            if len(kept) < _REASONS_MAX and _keepable(key):
                kept[key] = hit
        return hit

    def _key_fn(self, facts: frozenset[str], has_recipient: bool) -> Callable[[Event], tuple[object, ...]] | None:
        """The key function of these facts (shared by the memo's plans and the reasons' keys)."""
        fn_key = (facts, has_recipient)
        if fn_key not in self._key_fns:
            if len(self._key_fns) >= _KEY_FNS_MAX:
                self._key_fns.clear()
            self._key_fns[fn_key] = _key_function(facts, has_recipient, self.pack.minor_age)
        return self._key_fns[fn_key]

    def _remember(self, plan: _Plan, key: tuple[object, ...], d: Decision) -> None:
        memo = plan.memo
        if memo is None:
            return
        size = _entry_bytes(key, d)
        if size > _MEMO_MAX_ENTRY:
            return
        if self.memo_bytes + size > self.memo_budget:
            self.clear_memo()
        memo[key] = d
        self.memo_bytes += size

    def memo_entries(self) -> int:
        """How many decisions the memo holds."""
        return sum(len(p.memo) for p in self._plans.values() if p.memo is not None)

    def clear_memo(self) -> None:
        """Forget every memoised decision (plans stay)."""
        for plan in self._plans.values():
            if plan.memo is not None:
                plan.memo.clear()
        self.memo_bytes = 0
        self.memo_epoch += 1


def compile_pack(pack: Pack, memo_bytes: int = MEMO_BYTES, plan_bytes: int = PLAN_BYTES) -> CompiledPack:
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
    return CompiledPack(pack, index, reads=frozenset(reads), reads_minor="subject.minor" in reads,
                        memo_budget=memo_bytes, plan_budget=plan_bytes)


def load_pack(name_or_path: str | Path) -> CompiledPack:
    """Load, lint and compile a bundled pack by id or a pack file by path."""
    return compile_pack(parse_pack(resolve_pack(name_or_path)))


def _key_function(facts: Iterable[str], has_recipient: bool,
                  minor_age: int) -> Callable[[Event], tuple[object, ...]] | None:
    """A function returning, for an event, the values of ``facts`` (the memo key of one plan).

    Generated once per plan from the fixed expressions of ``_KEY_EXPR`` (attribute names are passed
    as constants, never written into the source). Recipient facts are left out of the key of a plan
    for events without a recipient: they are None for all of them."""
    exprs: list[str] = []
    used: list[str] = []
    consts: dict[str, object] = {"_minor": subject_minor, "_abroad": recipient_abroad}
    for fact in sorted(facts):
        if fact not in _KEY_EXPR and not fact.startswith("attributes."):
            return None   # a fact this table does not know how to key: the plan is not memoised
        if fact.startswith("attributes."):
            name = f"_a{len(consts)}"
            consts[name] = fact.removeprefix("attributes.")
            exprs.append(f"e.attributes.get({name})")
        elif fact in _RECIPIENT_FACTS and not has_recipient:
            continue
        else:
            exprs.append(_KEY_EXPR[fact].format(minor_age=int(minor_age)))
        used.append(fact)
    body = "    s = e.subject\n" if any(x.startswith("s.") or " s." in x or "(s," in x for x in exprs) else ""
    src = f"def key(e):\n{body}    return ({''.join(x + ', ' for x in exprs)})\n"
    namespace: dict[str, object] = dict(consts)
    exec(compile(src, "<policy-memo-key>", "exec"), namespace)  # noqa: S102 - fixed expressions only
    key = namespace["key"]
    key.facts = tuple(used)  # type: ignore[attr-defined]  # what the key holds, in order (stream/factpath.py)
    return key  # type: ignore[return-value]


def _keepable(key: tuple[object, ...]) -> bool:
    """Whether a reason or report may be kept under this key: no text in it over _MEMO_MAX_TEXT
    characters, no category list over _CACHEABLE_CATEGORIES."""
    for v in key:
        if isinstance(v, str | tuple) and len(v) > (_MEMO_MAX_TEXT if isinstance(v, str) else _CACHEABLE_CATEGORIES):
            return False
    return True


def _plan_bytes(key: tuple[object, ...], plan: _Plan) -> int:
    """An estimate of what one cached plan keeps alive: its key, element set, candidate entries and
    empty memo (the conditions and rules are the pack's, shared; key functions are shared by plans)."""
    size = 400 + sys.getsizeof(key) + sys.getsizeof(key[3]) + sys.getsizeof(plan.atoms)
    for entry in (*plan.permits, *plan.constraints):
        size += 200 + 8 * (len(entry.scope) + len(entry.conditions) + len(entry.broken))
    return size


def _entry_bytes(key: tuple[object, ...], d: Decision) -> int:
    """An estimate of what one memo entry keeps alive: the key's values and the decision's own parts
    (rule references are the pack's, shared)."""
    size = sys.getsizeof(key) + 120   # key tuple, dict slot, the decision tuple
    for v in key:
        if isinstance(v, str):
            if len(v) > _MEMO_MAX_TEXT:
                return _MEMO_MAX_ENTRY + 1
            size += sys.getsizeof(v)
    for v in (*d.violations, *d.considered):
        size += 120 + len(v.reason) + sum(len(f) for f in v.failed)
    size += 8 * len(d.held)
    return size


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
    what = f"{getattr(e.kind, 'value', e.kind)} of {', '.join(e.data_categories)} for {e.purpose}"
    if e.recipient is not None:
        what += f" to {e.recipient.type}"
    return what


def _reason(cond: Condition, e: Event, x: Derived) -> str:
    return cond.reason(e, x)


def _violation(rule: Rule, kind: ViolationKind, e: Event, x: Derived, broken: list[Condition],
               reason_of: Callable[[Condition, Event, Derived], str] = _reason) -> Violation:
    why = "; ".join([reason_of(cond, e, x) for cond in broken])
    if kind is ViolationKind.PROHIBITED:
        reason = rule.explain or f"prohibited: {describe(e)}"
    elif kind is ViolationKind.CONSTRAINT_FAILED:
        reason = f"{rule.explain or describe(e) + ' breaks this constraint'} ({why})"
    else:
        reason = f"{rule.explain} ({why})" if rule.explain else why
    return Violation(rule.ref, kind, reason, tuple(cond.source for cond in broken))


def _decide(e: Event, compiled: CompiledPack, plan: _Plan) -> Decision:
    """The plain evaluation of an event under its plan (no memo), with the compiled tests: the
    plan's allow test first. An event it does not allow goes through the plan's fails test, whose
    bit set (which rules were in scope, which of their conditions failed) is judged once per plan
    (CompiledPack.judge); the report (violations, their reasons, considered permits) is written
    once per value of the facts the failed tests' reasons read and then kept (CompiledPack.report)."""
    allow = plan.allow
    if allow is None:
        plan.uses += 1
        if plan.uses < _COMPILE_AFTER:   # compiling costs tens of plain evaluations: only plans in use
            return _decide_interpreted(e, compiled, plan)
        allow = compiled.compile_plan(plan)
    try:
        bits = allow.test(e, plan.atoms)
        if not bits:
            sig = allow.fails(e, plan.atoms)
    except AttributeError:   # an Event built by hand with plain strings for enums
        return _decide_interpreted(e, compiled, plan)
    if bits:
        tail = allow.tails.get(bits)
        if tail is None:
            tail = allow.tail(bits, compiled.pack)
        return _new_decision(Decision, (e.event_id, *tail))
    judged = plan.judged.get(sig)
    if judged is None:
        judged = compiled.judge(plan, allow, sig, e.recipient is not None)
    key_of = judged.key_of
    if key_of is not None:
        try:
            key = key_of(e)
        except AttributeError:   # a hand-built event (plain strings for enums)
            return _decide_interpreted(e, compiled, plan)
        tail = judged.tails.get(key)
        if tail is None:
            tail = compiled.report(judged, key, e, plan)
        return _new_decision(Decision, (e.event_id, *tail))
    # a failed test reads a fact no key function knows: the report is kept per its reasons' texts
    pack = compiled.pack
    x = Derived(plan.atoms, subject_minor(e.subject, pack.minor_age) if plan.needs_minor else None, pack.minor_age)
    reason = compiled.reason
    why = tuple([reason(cond, e, x) for cond in judged.conds])
    tail = judged.tails.get(why)
    if tail is None:
        tail = compiled.report(judged, why, e, plan, x)
    return _new_decision(Decision, (e.event_id, *tail))


class _Judged:
    """What one bit set of a plan's fails test decides (CompiledPack.judge): the violations to report
    as (rule, kind, failed conditions), most specific first (rule None: the default deny), the
    permits considered, the permit that held and every rule that held. ``conds`` lists the failed
    conditions whose reasons the report quotes, in report order. Only those reasons are the event's,
    and a reason is a function of the facts its test reads (the memo relies on the same), so
    ``tails`` keeps the rest of the decision per value of those facts (``key_of``: the plan's key
    facts left out, they are the plan's own), or per tuple of the reasons' texts when a failed
    test reads a fact no key function knows (``key_of`` None)."""

    __slots__ = ("found", "considered", "permitted_by", "held", "conds", "key_of", "tails")

    def __init__(self, found: list[tuple[Rule | None, ViolationKind, list[Condition]]],
                 considered: list[tuple[Rule, ViolationKind, list[Condition]]], permitted_by: RuleRef | None,
                 held: tuple[str, ...]) -> None:
        self.found, self.considered, self.permitted_by, self.held = found, considered, permitted_by, held
        self.conds = tuple(cond for _, kind, broken in (*found, *considered) if kind is not ViolationKind.PROHIBITED
                           for cond in broken)
        self.key_of: Callable[[Event], tuple[object, ...]] | None = None
        self.tails: dict[tuple[object, ...], tuple[object, ...]] = {}


def _decide_interpreted(e: Event, compiled: CompiledPack, plan: _Plan) -> Decision:
    """The plain evaluation with each test's own ``holds``: the reference the compiled tests are
    checked against (tests/unit/policy/test_compiled_tests.py), and the path for hand-built events."""
    pack = compiled.pack
    x = Derived(plan.atoms, subject_minor(e.subject, pack.minor_age) if plan.needs_minor else None, pack.minor_age)
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


def _refused(e: Event, compiled: CompiledPack, plan: _Plan) -> Decision:
    """The decision for an event whose plan refuses it before any rule: its undeclared names."""
    pack = compiled.pack
    return Decision(e.event_id, Verdict.VIOLATION, plan.undeclared, None, pack.id, pack.content_hash)


def decide(e: Event, compiled: CompiledPack) -> Decision:
    """The decision for an event's facts, as remembered: shared by every event with the same facts
    (its ``event_id`` is the first such event's). :func:`evaluate` puts the event's own id on it."""
    plan = compiled.plan(e)
    if plan.undeclared:
        return _refused(e, compiled, plan)
    memo = plan.memo
    if memo is None:
        return _decide(e, compiled, plan)
    try:
        key = plan.key_of(e)  # type: ignore[misc]
    except AttributeError:   # an Event built by hand with plain strings for enums: judge it, keep nothing
        return _decide(e, compiled, plan)
    hit = memo.get(key)
    if hit is not None:
        compiled.memo_hits += 1
        return hit
    compiled.memo_misses += 1
    d = _decide(e, compiled, plan)
    compiled._remember(plan, key, d)
    return d


def evaluate(e: Event, compiled: CompiledPack) -> Decision:
    """Judge one event against a compiled pack."""
    d = decide(e, compiled)
    eid = e.event_id
    if d[0] is eid:
        return d
    return _new_decision(Decision, (eid, *d[1:]))


def evaluate_plain(e: Event, compiled: CompiledPack) -> Decision:
    """Judge one event without the memo (benchmarks and differential tests)."""
    plan = compiled.plan(e)
    if plan.undeclared:
        return _refused(e, compiled, plan)
    return _decide(e, compiled, plan)


def evaluate_interpreted(e: Event, compiled: CompiledPack) -> Decision:
    """Judge one event without the memo and without the compiled tests (the differential tests)."""
    plan = compiled.plan(e)
    if plan.undeclared:
        return _refused(e, compiled, plan)
    return _decide_interpreted(e, compiled, plan)


class MemoEvaluator:
    """``evaluate`` returning also the shared decision for the event's facts.

    Returns (decision, template): the template is shared by every event with the same facts (the
    memo of the compiled pack, keyed per plan on exactly the facts its rules and reasons read), so
    callers can cache work derived from it (see the stream processor). Ids, times, the source system
    and free attributes no rule reads are not in the key. ``max_entries`` is kept for callers; the
    memo is bounded in bytes by the compiled pack's ``memo_budget``.
    """

    def __init__(self, compiled: CompiledPack, max_entries: int = 50_000) -> None:
        self.compiled = compiled
        self.max_entries = max_entries

    def __call__(self, e: Event) -> tuple[Decision, Decision]:
        template = decide(e, self.compiled)
        eid = e.event_id
        if template[0] is eid or template.event_id == eid:
            return template, template
        return _new_decision(Decision, (eid, *template[1:])), template
