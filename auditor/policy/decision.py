"""The outcome of judging one event against one pack."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(str, Enum):
    ALLOW = "ALLOW"
    VIOLATION = "VIOLATION"


class ViolationKind(str, Enum):
    """Why a rule counts as violated."""

    CONDITION_FAILED = "CONDITION_FAILED"   # a permit rule was in scope but a condition failed
    PROHIBITED = "PROHIBITED"               # a prohibition was in scope and no exception held
    DEFAULT_DENY = "DEFAULT_DENY"           # no permit rule covers the event
    UNDECLARED = "UNDECLARED"               # category, purpose or recipient not in the vocabulary


@dataclass(frozen=True, slots=True)
class RuleRef:
    """A rule as cited in a verdict: its id, clause and the quoted policy text."""

    rule_id: str
    clause: str
    quote: str
    severity: str = "medium"


@dataclass(frozen=True, slots=True)
class Violation:
    rule: RuleRef
    kind: ViolationKind
    reason: str

    @property
    def rule_id(self) -> str:
        return self.rule.rule_id


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one event, with every violated rule and the permit that applied, if any.

    ``held`` lists the rules that were in scope and held (permit: allowed the event;
    prohibit: an exception applied); tests use it for rule coverage, investigators to see
    which clauses were weighed.
    """

    event_id: str
    verdict: Verdict
    violations: tuple[Violation, ...]
    permitted_by: RuleRef | None
    pack_id: str
    pack_hash: str
    held: tuple[str, ...] = ()

    @property
    def violated_rule_ids(self) -> tuple[str, ...]:
        return tuple(v.rule.rule_id for v in self.violations)


def rule_to_dict(ref: RuleRef, *, quote: bool = True) -> dict[str, str]:
    out = {"rule": ref.rule_id, "clause": ref.clause, "severity": ref.severity}
    if quote:
        out["quote"] = ref.quote
    return out


def decision_to_dict(d: Decision, *, quote: bool = True) -> dict[str, object]:
    """The JSON form of a decision (``auditor check --format jsonl``, the violations topic)."""
    return {
        "event_id": d.event_id,
        "verdict": d.verdict.value,
        "pack": d.pack_id,
        "pack_hash": d.pack_hash,
        "permitted_by": None if d.permitted_by is None else rule_to_dict(d.permitted_by, quote=quote),
        "violations": [dict(rule_to_dict(v.rule, quote=quote), kind=v.kind.value, reason=v.reason)
                       for v in d.violations],
    }
