"""The parsed form of a policy pack: vocabulary terms and rules, before compilation."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from auditor.events.model import EventKind
from auditor.policy.conditions import Condition
from auditor.policy.decision import RuleRef

SEVERITIES = ("critical", "high", "medium", "low")


class Effect(str, Enum):
    PERMIT = "permit"
    PROHIBIT = "prohibit"


@dataclass(frozen=True, slots=True)
class Term:
    """A vocabulary entry (or the default clause): where the policy names it, in its words."""

    id: str
    clause: str
    quote: str


@dataclass(frozen=True, slots=True)
class Scope:
    """Which events a rule speaks about. ``None`` means any."""

    kinds: frozenset[EventKind] | None = None
    recipients: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    minor: bool | None = None
    cross_border: bool | None = None
    regions: frozenset[str] | None = None


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

    @property
    def ref(self) -> RuleRef:
        return RuleRef(self.id, self.clause, self.quote, self.severity)


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
    rules: tuple[Rule, ...]
    path: str = ""
    content_hash: str = ""
    synthetic: dict[str, RuleRef] = field(default_factory=dict)
