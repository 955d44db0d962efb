"""The parsed form of a policy pack (language 2): vocabulary, permits and constraints."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from auditor.errors import PolicyError
from auditor.events.model import EventKind
from auditor.policy.conditions import Condition
from auditor.policy.decision import RuleRef

SEVERITIES = ("critical", "high", "medium", "low")


class Effect(str, Enum):
    PERMIT = "permit"            # allows what its scope covers when its conditions hold
    CONSTRAINT = "constraint"    # binds every event its scope covers, whatever permit allows it


@dataclass(frozen=True, slots=True)
class Term:
    """A vocabulary entry (or the default clause): where the policy names it, in its words."""

    id: str
    clause: str
    quote: str
    maps_to: tuple[str, ...] = ()
    holds: tuple[str, ...] = ()          # categories: the elements or sub-categories it holds
    countries: tuple[str, ...] = ()      # regions: the ISO codes it names


@dataclass(frozen=True, slots=True)
class Scope:
    """Which events a rule speaks about: the indexed dimensions, then the other tests.

    ``None`` means any. ``kinds``, ``recipients`` and ``purposes`` key the lookup tables;
    ``tests`` (categories, actor, subject, transfer, consent, ... and combinators) are checked
    on each candidate.
    """

    kinds: frozenset[EventKind] | None = None
    recipients: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    tests: tuple[Condition, ...] = ()
    source: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    effect: Effect
    clause: str
    quote: str
    severity: str
    scope: Scope
    conditions: tuple[Condition, ...]
    explain: str | None = None
    line: int = 0
    require_source: tuple[object, ...] = ()
    forbid: bool = False                 # a constraint that nothing in its scope can satisfy
    absent: tuple[tuple[str, str], ...] = ()
    specificity: float = 0.0
    ref: RuleRef = field(default=RuleRef("", "", ""), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", RuleRef(self.id, self.clause, self.quote, self.severity))


@dataclass(frozen=True, slots=True)
class Pack:
    id: str
    title: str
    source: str
    version: str
    minor_age: int
    default: Term
    categories: dict[str, Term]
    purposes: dict[str, Term]
    recipients: dict[str, Term]
    roles: frozenset[str]
    rules: tuple[Rule, ...]              # permits, then constraints, each in pack order
    path: str = ""
    content_hash: str = ""
    synthetic: dict[str, RuleRef] = field(default_factory=dict)
    elements: dict[str, Term] = field(default_factory=dict)
    regions: dict[str, Term] = field(default_factory=dict)
    role_terms: dict[str, Term] = field(default_factory=dict)
    atoms: dict[str, frozenset[str]] = field(default_factory=dict)   # category or element -> elements
    absent: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[PolicyError, ...] = ()

    @property
    def permits(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.effect is Effect.PERMIT)

    @property
    def constraints(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.effect is Effect.CONSTRAINT)

    def data_names(self) -> frozenset[str]:
        """Every name an event may put in ``data_categories``: categories and elements."""
        return frozenset(self.atoms)
