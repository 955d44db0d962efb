"""Example tables: events with expected decisions, and rule coverage over them.

Tables live in ``tests/data/examples/<pack>.yaml`` (format: ``docs/examples-format.md``).
They are run by ``auditor policy test`` (the test suite calls it for the five seed packs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import DecodeError, PolicyError
from auditor.events.codec import event_from_mapping
from auditor.events.model import Event
from auditor.policy.decision import Decision, Verdict
from auditor.policy.engine import CompiledPack, evaluate
from auditor.policy.model import Effect
from auditor.policy.yamlsrc import load_yaml

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


def load_examples(path: Path, pack_id: str | None = None) -> list[Example]:
    """Read an example table; a fault names the file (and the example) at fault."""
    data = load_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise PolicyError("an example table is a mapping with 'pack', 'base' and an 'examples' list "
                          "(docs/examples-format.md)", path=str(path))
    if pack_id is not None and data.get("pack") not in (None, pack_id):
        raise PolicyError(f"this table is for pack '{data.get('pack')}', not '{pack_id}'", path=str(path))
    base = data.get("base") or {}
    out = []
    for row in data["examples"]:
        line = getattr(row, "line", None)
        if not isinstance(row, dict) or "id" not in row or row.get("expect") not in ("ALLOW", "VIOLATION"):
            raise PolicyError("each example needs an 'id' and 'expect: ALLOW|VIOLATION'", path=str(path), line=line)
        merged = deep_merge(base, row.get("event") or {})
        merged["event_id"] = row["id"]
        try:
            event = event_from_mapping(merged)
        except DecodeError as exc:
            raise PolicyError(f"example {row['id']}: {exc}", path=str(path), line=line) from exc
        out.append(Example(
            id=str(row["id"]), title=str(row.get("title", "")), clause=str(row.get("clause", "")),
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
    """How much of a pack an example table exercises.

    A permit is covered when one example is allowed by it and another breaks it (it failed
    while in scope: reported, or considered beside a more specific permit). A constraint with
    ``require`` is covered when one example satisfies it in scope and another breaks it; one
    that forbids, and the engine's default-deny and undeclared rules, need a breaking example only.
    """

    held: dict[str, int]
    broken: dict[str, int]
    missing: list[str]
    rules: list[str]          # permits and engine rules
    constraints: list[str]

    def _percent(self, ids: list[str]) -> float:
        incomplete = {m.split(":", 1)[0] for m in self.missing}
        return 100.0 * sum(1 for i in ids if i not in incomplete) / len(ids) if ids else 100.0

    @property
    def rule_percent(self) -> float:
        return self._percent(self.rules)

    @property
    def constraint_percent(self) -> float:
        return self._percent(self.constraints)

    @property
    def percent(self) -> float:
        return self._percent(self.rules + self.constraints)


def coverage(pack: CompiledPack, outcomes: list[Outcome]) -> Coverage:
    """Which rules and constraints the examples exercised on each side (see :class:`Coverage`)."""
    p = pack.pack
    synthetic = [f"{pack.id}.{name}" for name in SYNTHETIC_VIOLATE_ONLY]
    held = {r.id: 0 for r in p.rules}
    broken = {r.id: 0 for r in p.rules} | dict.fromkeys(synthetic, 0)
    for o in outcomes:
        for rid in o.decision.held:
            held[rid] = held.get(rid, 0) + 1
        for rid in (*o.decision.violated_rule_ids, *(v.rule_id for v in o.decision.considered)):
            broken[rid] = broken.get(rid, 0) + 1
    missing = []
    for rule in p.rules:
        if not held[rule.id] and not rule.forbid:
            missing.append(f"{rule.id}: no example where it holds"
                           + (" (permits the event)" if rule.effect is Effect.PERMIT else " (satisfied in scope)"))
        if not broken[rule.id]:
            missing.append(f"{rule.id}: no example that breaks it")
    for rid in synthetic:
        if not broken[rid]:
            missing.append(f"{rid}: no example that triggers it")
    return Coverage(held, broken, missing, [r.id for r in p.permits] + synthetic, [r.id for r in p.constraints])


def examples_path(pack_id: str, root: Path | None = None) -> Path:
    root = root or Path(__file__).resolve().parents[2]
    return root / "tests" / "data" / "examples" / f"{pack_id}.yaml"
