"""``auditor policy test``: run example tables against a pack; report pass/fail, reasons and coverage.

Renders as text (for people), JSON (for tools) or JUnit XML (for CI). Pure apart from reading
the table files; the CLI decides the exit code.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import PolicyError
from auditor.policy.engine import CompiledPack
from auditor.policy.examples import Coverage, Outcome, coverage, load_examples, run_examples
from auditor.policy.loader import packs_dir


def default_examples(pack: CompiledPack) -> list[Path]:
    """Where a pack's example table is when none is named: beside the pack, or the repo's table."""
    path = Path(pack.pack.path)
    for candidate in (path.with_name(f"{path.stem}.examples.yaml"), path.parent / "examples" / f"{path.stem}.yaml"):
        if candidate.is_file():
            return [candidate]
    if path.parent.resolve() == packs_dir().resolve():
        repo = Path(__file__).resolve().parents[2] / "tests" / "data" / "examples" / f"{pack.id}.yaml"
        if repo.is_file():
            return [repo]
    raise PolicyError(f"no example table found for pack '{pack.id}': name one (auditor policy test PACK "
                      f"TABLE.yaml) or put it beside the pack as {path.stem}.examples.yaml")


@dataclass
class TestReport:
    pack: CompiledPack
    tables: list[Path]
    outcomes: list[Outcome]
    coverage: Coverage
    min_coverage: float

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problems]

    @property
    def coverage_ok(self) -> bool:
        return self.coverage.percent + 1e-9 >= self.min_coverage

    @property
    def ok(self) -> bool:
        return not self.failures and self.coverage_ok and bool(self.outcomes)


def run_tables(pack: CompiledPack, tables: list[Path], min_coverage: float = 0.0) -> TestReport:
    outcomes: list[Outcome] = []
    seen: dict[str, Path] = {}
    for table in tables:
        examples = load_examples(table, pack_id=pack.id)
        for ex in examples:
            if ex.id in seen:
                raise PolicyError(f"example id '{ex.id}' is also in {seen[ex.id]}", path=str(table))
            seen[ex.id] = table
        outcomes += run_examples(examples, pack)
    return TestReport(pack, tables, outcomes, coverage(pack, outcomes), min_coverage)


def _violations(o: Outcome) -> list[dict[str, object]]:
    return [{"rule": v.rule_id, "kind": v.kind.value, "reason": v.reason, "failed": list(v.failed)}
            for v in o.decision.violations]


def to_text(r: TestReport) -> str:
    lines = [f"{r.pack.id}: {len(r.outcomes)} examples from {', '.join(str(t) for t in r.tables)}"]
    for o in r.outcomes:
        d = o.decision
        status = "FAIL" if o.problems else "PASS"
        lines.append(f"  {status} {o.example.id:<32} {d.verdict.value:<9} {o.example.title}")
        if o.problems:
            lines += [f"       got {p}" for p in o.problems]
            lines += [f"       - {v.rule_id}: {v.reason}" for v in d.violations]
            if d.permitted_by is not None:
                lines.append(f"       permitted by {d.permitted_by.rule_id}")
    cov = r.coverage
    lines.append(f"{len(r.outcomes) - len(r.failures)}/{len(r.outcomes)} pass; coverage: rules "
                 f"{cov.rule_percent:.0f}% ({len(cov.rules)}), constraints {cov.constraint_percent:.0f}% "
                 f"({len(cov.constraints)}), all {cov.percent:.0f}%"
                 + (f" (minimum {r.min_coverage:.0f}%)" if r.min_coverage else ""))
    lines += [f"  UNCOVERED {m}" for m in cov.missing]
    if not r.outcomes:
        lines.append("no examples: nothing was tested")
    lines.append("OK" if r.ok else "FAILED")
    return "\n".join(lines) + "\n"


def to_json(r: TestReport) -> str:
    cov = r.coverage
    doc = {
        "pack": r.pack.id, "pack_hash": r.pack.content_hash, "tables": [str(t) for t in r.tables], "ok": r.ok,
        "passed": len(r.outcomes) - len(r.failures), "failed": len(r.failures),
        "examples": [{"id": o.example.id, "title": o.example.title, "clause": o.example.clause,
                      "status": "fail" if o.problems else "pass", "problems": o.problems,
                      "expected": o.example.expect.value, "verdict": o.decision.verdict.value,
                      "permitted_by": o.decision.permitted_by.rule_id if o.decision.permitted_by else None,
                      "violations": _violations(o)} for o in r.outcomes],
        "coverage": {"percent": round(cov.percent, 2), "rules_percent": round(cov.rule_percent, 2),
                     "constraints_percent": round(cov.constraint_percent, 2), "minimum": r.min_coverage,
                     "held": cov.held, "broken": cov.broken, "missing": cov.missing},
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def to_junit(r: TestReport) -> str:
    suite = ET.Element("testsuite", name=f"auditor.policy.{r.pack.id}", tests=str(len(r.outcomes) + 1),
                       failures=str(len(r.failures) + (0 if r.coverage_ok else 1)), errors="0")
    for o in r.outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"{r.pack.id}.examples", name=o.example.id)
        if o.problems:
            failure = ET.SubElement(case, "failure", message="; ".join(o.problems))
            failure.text = "\n".join(f"{v['rule']}: {v['reason']}" for v in _violations(o))
    case = ET.SubElement(suite, "testcase", classname=f"{r.pack.id}.coverage", name="coverage")
    if not r.coverage_ok:
        failure = ET.SubElement(case, "failure", message=f"coverage {r.coverage.percent:.0f}% is below "
                                                         f"{r.min_coverage:.0f}%")
        failure.text = "\n".join(r.coverage.missing)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


RENDERERS = {"text": to_text, "json": to_json, "junit": to_junit}
