"""Example tables: events with expected decisions, and rule coverage over them.

Tables live in ``tests/data/examples/<pack>.yaml`` (format: ``docs/examples-format.md``).
They are run by the test suite and by ``python -m auditor.policy.selfcheck PACK``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auditor.errors import DecodeError, PolicyError
from auditor.events.codec import event_from_mapping
from auditor.events.model import Event
from auditor.policy.decision import Decision, Verdict
from auditor.policy.engine import CompiledPack, evaluate
from auditor.policy.model import Effect

SYNTHETIC_VIOLATE_ONLY = ("default-deny", "undeclared-category", "undeclared-purpose", "undeclared-recipient")


@dataclass(frozen=True)
class Example:
    id: str
    title: str
    clause: str
    expect: Verdict
    violations: frozenset[str]
    permitted_by: str | None
    event: Event
    compare: str | None = None


@dataclass
class Outcome:
    example: Example
    decision: Decision
    problems: list[str] = field(default_factory=list)


def deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def load_examples(path: Path) -> list[Example]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    base = data.get("base") or {}
    out = []
    for row in data.get("examples") or []:
        merged = deep_merge(base, row.get("event") or {})
        merged["event_id"] = row["id"]
        try:
            event = event_from_mapping(merged)
        except DecodeError as exc:
            raise PolicyError(f"example {row['id']}: {exc}", path=str(path)) from exc
        out.append(Example(
            id=row["id"], title=row.get("title", ""), clause=str(row.get("clause", "")),
            expect=Verdict(row["expect"]), violations=frozenset(row.get("violations") or []),
            permitted_by=row.get("permitted_by"), event=event, compare=row.get("compare"),
        ))
    return out


def run_examples(examples: list[Example], pack: CompiledPack) -> list[Outcome]:
    outcomes = []
    for ex in examples:
        d = evaluate(ex.event, pack)
        o = Outcome(ex, d)
        if d.verdict is not ex.expect:
            o.problems.append(f"verdict {d.verdict.value}, expected {ex.expect.value}")
        got = set(d.violated_rule_ids)
        if got != ex.violations:
            o.problems.append(f"violations {sorted(got)}, expected {sorted(ex.violations)}")
        if ex.permitted_by is not None and (d.permitted_by is None or d.permitted_by.rule_id != ex.permitted_by):
            o.problems.append(f"permitted_by {d.permitted_by.rule_id if d.permitted_by else None}, "
                              f"expected {ex.permitted_by}")
        if not ex.clause:
            o.problems.append("example cites no clause")
        outcomes.append(o)
    return outcomes


@dataclass
class Coverage:
    held: dict[str, int]
    broken: dict[str, int]
    missing: list[str]

    @property
    def percent(self) -> float:
        total = len(self.held)
        return 100.0 * (total - len(self.missing)) / total if total else 100.0


def coverage(pack: CompiledPack, outcomes: list[Outcome]) -> Coverage:
    """Each rule must be held by one example and broken by another; synthetic rules broken only."""
    held = {r.id: 0 for r in pack.pack.rules}
    broken = {r.id: 0 for r in pack.pack.rules}
    for name in SYNTHETIC_VIOLATE_ONLY:
        broken[f"{pack.id}.{name}"] = 0
    for o in outcomes:
        for rid in o.decision.held:
            held[rid] = held.get(rid, 0) + 1
        for rid in o.decision.violated_rule_ids:
            broken[rid] = broken.get(rid, 0) + 1
    missing = []
    for rule in pack.pack.rules:
        if not held[rule.id]:
            missing.append(f"{rule.id}: no example where it holds"
                           + (" (permits the event)" if rule.effect is Effect.PERMIT else " (exception applies)"))
        if not broken[rule.id]:
            missing.append(f"{rule.id}: no example that breaks it")
    for name in SYNTHETIC_VIOLATE_ONLY:
        if not broken[f"{pack.id}.{name}"]:
            missing.append(f"{pack.id}.{name}: no example that triggers it")
    return Coverage(held, broken, missing)


def examples_path(pack_id: str, root: Path | None = None) -> Path:
    root = root or Path(__file__).resolve().parents[2]
    return root / "tests" / "data" / "examples" / f"{pack_id}.yaml"
