"""Compile a rule's tests into one generated Python function over the facts they read.

The interpreted form of a test (:mod:`auditor.policy.conditions`) calls ``holds`` on every node of
its tree, and every ``FactIn`` reads its fact through a lambda: a rule with an ``any_of`` of three
tests costs seven Python calls per event. :func:`compile_tests` writes the same tests as one
boolean expression (``and``/``or``/``not`` short-circuit as the interpreted loops do) in a function
``f(e, x)`` that reads each event part it needs once into a local, and compiles it once per rule.

Only fixed expressions are written into the source; every value a pack supplies (accepted values,
attribute names, element sets) is passed in as a named constant, never as text. A test class this
module does not know is called through its own ``holds``, so the result never depends on what is
generated for it. Enum facts are compared by their string value (an Enum's ``__hash__`` is Python
code); an Event built by hand with plain strings for enums raises AttributeError here, and the
engine then judges it with the interpreted tests. ``tests/unit/policy/test_compiled_tests.py``
checks the generated function against ``holds`` on every test of every seed pack.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from types import CodeType, FunctionType

from auditor.events.model import ActorOrganisation, Event
from auditor.policy import conditions as c

Compiled = Callable[[Event, c.Derived], object]

#: locals a fact expression may use, and how each is read once at the top of the function
_LOCALS = {
    "r": "r = e.recipient",
    "s": "s = e.subject",
    "a": "a = e.actor",
    "t": "t = e.transfer",
    "k": "k = e.consent",
}

#: fact -> (expression, locals it uses, compared by enum value). The value of each expression is
#: the value ``conditions.FACTS`` returns (for enum facts: that enum's ``_value_``).
_FACT_EXPR: dict[str, tuple[str, str, bool]] = {
    "kind": ("e.kind._value_", "", True),
    "purpose": ("e.purpose", "", False),
    "recipient.type": ("(None if r is None else r.type)", "r", False),
    "recipient.id": ("(None if r is None else r.id)", "r", False),
    "recipient.country": ("(None if r is None or not r.country else r.country.upper())", "r", False),
    "recipient.on_our_behalf": ("(None if r is None else r.on_our_behalf)", "r", False),
    "identifiability": ("e.identifiability._value_", "", True),
    "legal_request.type": ("e.legal_request.type._value_", "", True),
    "legal_basis": ("(e.legal_basis.lower() if e.legal_basis else None)", "", False),
    "actor.type": ("a.type._value_", "a", True),
    "actor.role": ("a.role", "a", False),
    "actor.organisation": ("a.organisation._value_", "a", True),
    "actor.is_subject": ("(a.id == s.id)", "as", False),
    "subject.minor": ("x.minor", "", False),
    "subject.region": ("(s.region.upper() if s.region else None)", "s", False),
    "transfer.cross_border": ("t.cross_border", "t", False),
    "transfer.destination_country": ("(t.destination_country.upper() if t.destination_country else None)", "t",
                                     False),
    "transfer.safeguard": ("t.safeguard._value_", "t", True),
    "recipient.abroad": ("_abroad(e)", "", False),
}


#: compiled code by source text (bounded): rules and plans of the same structure differ only in their
#: constants, which each function gets in its own namespace, so they share one code object
_CODE: dict[str, CodeType] = {}
_CODE_MAX = 4096


def _function(src: str, name: str, consts: dict[str, object]) -> Callable[..., object]:
    """The function ``name`` that ``src`` defines, its free names bound to ``consts``. The source is
    compiled once (the expensive part of compiling a plan) and its code shared."""
    code = _CODE.get(src)
    if code is None:
        module = compile(src, f"<policy-{name}>", "exec")
        code = next(c for c in module.co_consts if isinstance(c, CodeType) and c.co_name == name)
        if len(_CODE) >= _CODE_MAX:
            _CODE.clear()
        _CODE[src] = code
    namespace: dict[str, object] = {**consts, "__builtins__": builtins}
    fn = FunctionType(code, namespace, name)
    fn.__source__ = src  # type: ignore[attr-defined]   # for tests and debugging
    return fn


class _Writer:
    def __init__(self) -> None:
        self.consts: dict[str, object] = {"_abroad": c.recipient_abroad, "_minor": c.subject_minor,
                                          "_Derived": c.Derived, "_bool_text": c.BOOL_TEXT}
        self.locals: set[str] = set()
        self.holds = False   # some test is called through its own holds(e, x)
        self.x = "x."        # how the derived facts are read: x.atoms, x.minor (or the locals atoms, minor)
        self.facts: dict[str, tuple[int, str]] = {}   # fact read -> (number, expression)
        self.uses: dict[int, int] = {}                # fact number -> how many tests read it

    def const(self, value: object) -> str:
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def fact(self, name: str, text: str) -> str:
        """A placeholder for one fact read: a fact read by several tests is read once, into a local
        (see :meth:`finish`); one read once stays inline, where short-circuiting may skip it."""
        n, _ = self.facts.setdefault(name, (len(self.facts), text))
        self.uses[n] = self.uses.get(n, 0) + 1
        return f"\x00{n}\x00"

    def finish(self, lines: list[str]) -> tuple[list[str], list[str]]:
        """(prelude lines reading the shared facts, ``lines`` with every placeholder filled)."""
        prelude, inline = [], {}
        for n, text in sorted(self.facts.values()):
            if self.uses[n] > 1:
                prelude.append(f"    f{n} = {text}")
                inline[n] = f"f{n}"
            else:
                inline[n] = text
        out = []
        for line in lines:
            for n, text in inline.items():
                line = line.replace(f"\x00{n}\x00", text)
            out.append(line)
        return prelude, out

    def expr(self, t: c.Condition) -> str:   # noqa: PLR0911 - one branch per test class
        if isinstance(t, c.FactIn) and t.fact in _FACT_EXPR:
            text, uses, by_value = _FACT_EXPR[t.fact]
            if t.fact == "subject.minor" and self.x != "x.":
                text, uses = "minor", "m"
            else:
                text = self.fact(t.fact, text)
            self.locals.update(uses)
            accepted: Iterable[object] = t.accepted
            if t.fact == "actor.organisation":
                # FACTS reads UNKNOWN as None: None accepts UNKNOWN, and UNKNOWN itself never matches
                accepted = [ActorOrganisation.UNKNOWN if v is None else v for v in t.accepted
                            if v is not ActorOrganisation.UNKNOWN]
            if by_value:
                accepted = [v if v is None else v._value_ for v in accepted]  # type: ignore[attr-defined]
            return f"({text} in {self.const(frozenset(accepted))})"
        if isinstance(t, c.Consent) and t.flag in c.CONSENT_FLAGS:
            self.locals.add("k")
            return f"k.{t.flag}"
        if isinstance(t, c.NotOptedOut):
            self.locals.add("k")
            return "(not k.marketing_opt_out)"
        if isinstance(t, c.AttributeEquals):
            name = f"attributes.{t.key}"
            key = self.facts[name][1] if name in self.facts else f"e.attributes.get({self.const(t.key)})"
            if t.booleans:   # as AttributeEquals.holds: true/false in any case read lower-cased
                have = self.fact(f"{name}/bool", f"(_v.lower() if (_v := {key}) is not None "
                                                 f"and _v.lower() in _bool_text else _v)")
            else:
                have = self.fact(name, key)
            return f"({have} in {self.const(t.values)})"
        if isinstance(t, c.CategoriesAny):
            return f"(not {self.const(t.atoms)}.isdisjoint({self.x}atoms))"
        if isinstance(t, c.OnlyCategories):
            return f"({self.x}atoms <= {self.const(t.atoms)})"
        if isinstance(t, c.TransferOutside):
            self.locals.add("t")
            return (f"(t.cross_border if not t.destination_country else "
                    f"t.destination_country.upper() not in {self.const(t.inside)})")
        if isinstance(t, c.SafeguardIfCrossBorder):
            return f"{self.const(t)}.holds(e, None)"   # its holds reads the event only
        if isinstance(t, c.Not):
            return f"(not {self.expr(t.inner)})"
        if isinstance(t, c.AnyOf) and t.options:
            return "(" + " or ".join(self.expr(o) for o in t.options) + ")"
        if isinstance(t, c.AllOf) and t.parts:
            return "(" + " and ".join(self.expr(p) for p in t.parts) + ")"
        self.holds = True
        return f"{self.const(t)}.holds(e, x)"   # any other test: its own interpreted holds


def compile_tests(tests: Iterable[c.Condition], name: str = "tests") -> Compiled | None:
    """One function ``f(e, x)`` true exactly when every test holds (None: no tests, always true)."""
    tests = tuple(tests)
    if not tests:
        return None
    w = _Writer()
    body = " and ".join(w.expr(t) for t in tests)
    shared, (body,) = w.finish([body])
    prelude = "".join(f"    {_LOCALS[v]}\n" for v in sorted(w.locals)) + "".join(f"{p}\n" for p in shared)
    src = f"def {name}(e, x):\n{prelude}    return {body}\n"
    return _function(src, name, w.consts)


#: (residual scope tests, residual conditions, a condition on the plan's key already failed, forbids)
RuleTests = tuple[tuple[c.Condition, ...], tuple[c.Condition, ...], bool, bool]


def _emit(w: _Writer, lines: list[str], name: str, minor_age: int) -> Callable[..., object]:
    """The function ``name(e, atoms)`` whose body is ``lines`` and which returns ``m``: the event
    parts the body reads, ``minor`` (when a test reads it) and the shared atom sets are read once at
    the top, and an ``x`` (:class:`conditions.Derived`) is built for tests called through their own
    ``holds``."""
    age = int(minor_age)
    if w.holds:
        w.locals.add("m")
    shared, lines = w.finish(lines)
    prelude = [f"    {_LOCALS[v]}" for v in sorted(w.locals - {"m"})]
    if "m" in w.locals:
        prelude.append(f"    minor = _minor(e.subject, {age})")
    prelude += shared
    if w.holds:
        prelude.append(f"    x = _Derived(atoms, minor, {age})")
    src = "\n".join([f"def {name}(e, atoms):", *prelude, *lines, "    return m", ""])
    return _function(src, name, w.consts)


def compile_plan(permits: Iterable[RuleTests], constraints: Iterable[RuleTests],
                 minor_age: int) -> Callable[[Event, frozenset[str]], int]:
    """The allow test of a whole plan as one function ``f(e, atoms)``: 0 when the event is not
    allowed (no permit holds, or a constraint in scope fails or forbids); otherwise a bit set with
    bit ``i`` for each permit ``i`` that holds and bit ``len(permits) + j`` for each constraint ``j``
    in scope (which then held). Every test of every rule in scope is evaluated (permits all, for the
    ``held`` list); the event's parts and the subject's minority are read once."""
    permits, constraints = tuple(permits), tuple(constraints)
    w = _Writer()
    w.x = ""
    lines = ["    m = 0"]
    for i, (scope, conds, broken, _) in enumerate(permits):
        if broken:
            continue   # can never hold
        test = " and ".join(w.expr(t) for t in (*scope, *conds)) or "True"
        lines.append(f"    if {test}:\n        m |= {1 << i}")
    lines.append("    if not m:\n        return 0")
    for j, (scope, conds, broken, forbid) in enumerate(constraints):
        bit = 1 << (len(permits) + j)
        test = " and ".join(w.expr(t) for t in scope) or "True"
        if forbid or broken:
            lines.append(f"    if {test}:\n        return 0")
            continue
        holds = " and ".join(w.expr(t) for t in conds) or "True"
        lines.append(f"    if {test}:\n        if not ({holds}):\n            return 0\n        m |= {bit}")
    return _emit(w, lines, "plan", minor_age)  # type: ignore[return-value]


#: per rule: the bit its scope sets, and the bits its failing conditions set
Layout = tuple[tuple[int, tuple[int, ...]], ...]


def compile_fails(permits: Iterable[RuleTests], constraints: Iterable[RuleTests],
                  minor_age: int) -> tuple[Callable[[Event, frozenset[str]], int], Layout]:
    """What failed, for an event a plan's allow test did not allow: one function ``f(e, atoms)``
    returning a bit set, and per rule (permits, then constraints) the bit set when its scope holds
    and the bits of each of its conditions that fails (tested one by one, in order, only when the
    scope holds; a prohibition's conditions are never weighed). The engine turns the bit set into
    the violations once per plan and bit set; the event's facts still decide every bit."""
    rules = (*permits, *constraints)
    w = _Writer()
    w.x = ""
    lines = ["    m = 0"]
    layout: list[tuple[int, tuple[int, ...]]] = []
    n = 0
    for scope, conds, _broken, forbid in rules:
        scope_bit = 1 << n
        n += 1
        cond_bits = []
        test = " and ".join(w.expr(t) for t in scope) or "True"
        lines.append(f"    if {test}:\n        m |= {scope_bit}")
        for cond in () if forbid else conds:
            bit = 1 << n
            n += 1
            cond_bits.append(bit)
            lines.append(f"        if not ({w.expr(cond)}):\n            m |= {bit}")
        layout.append((scope_bit, tuple(cond_bits)))
    return _emit(w, lines, "fails", minor_age), tuple(layout)  # type: ignore[return-value]
