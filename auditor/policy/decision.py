"""The outcome of judging one event against one pack."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple


class Verdict(str, Enum):
    ALLOW = "ALLOW"
    VIOLATION = "VIOLATION"


class ViolationKind(str, Enum):
    """Why a rule counts as violated."""

    CONDITION_FAILED = "CONDITION_FAILED"   # no permit held; this, the most specific in scope, failed
    CONSTRAINT_FAILED = "CONSTRAINT_FAILED" # a constraint was in scope and a required condition failed
    PROHIBITED = "PROHIBITED"               # a constraint forbids everything in its scope
    DEFAULT_DENY = "DEFAULT_DENY"           # no permit rule covers the event
    UNDECLARED = "UNDECLARED"               # category, purpose or recipient not in the vocabulary
    CLAIM_CONTRADICTED = "CLAIM_CONTRADICTED"  # the event's consent/age claim; the subject ledger says otherwise


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
    failed: tuple[str, ...] = ()   # the conditions that failed, as the pack writes them

    @property
    def rule_id(self) -> str:
        return self.rule.rule_id


class Decision(NamedTuple):
    """The verdict on one event, with every violated rule and the permit that applied, if any.

    ``violations`` lists the most specific rule first. ``held`` lists the rules that were in
    scope and held (permit: allowed the event; constraint: satisfied); tests use it for
    coverage, investigators to see which clauses were weighed. ``considered`` holds the other
    permits that were in scope but failed, when none allowed the event (not violations: only
    the most specific one is).
    """

    event_id: str
    verdict: Verdict
    violations: tuple[Violation, ...]
    permitted_by: RuleRef | None
    pack_id: str
    pack_hash: str
    held: tuple[str, ...] = ()
    considered: tuple[Violation, ...] = ()

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
        "violations": [dict(rule_to_dict(v.rule, quote=quote), kind=v.kind.value, reason=v.reason,
                            failed=list(v.failed)) for v in d.violations],
        "also_considered": [{"rule": v.rule.rule_id, "reason": v.reason} for v in d.considered],
    }
