"""``auditor policy lint|show|list|test|probe``: validate, inspect, test and probe policy packs."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError, PolicyError, PolicyLintError
from auditor.policy import bundled_pack_names, load_pack
from auditor.policy.model import Pack, Rule, Term

HELP = """\
Validate, inspect, test and probe policy packs (the language: docs/policy-language.md).

examples:
  auditor policy list                            the bundled packs
  auditor policy lint ipasar ./my.yaml           validate; errors and warnings name file, line and fault
  auditor policy lint --strict ./my.yaml         warnings (a rule relying on an absent fact) fail too
  git show HEAD:my.yaml | auditor policy lint -  a pack on standard input
  auditor policy show inper                      every field of every rule and constraint
  auditor policy show inper --json               the same as JSON, for tools
  auditor policy test ./my.yaml ./my.examples.yaml --min-coverage 100
                                                 run an example table: pass/fail with reasons, coverage
  auditor policy test ipasar --format junit > report.xml
  auditor policy probe ./my.yaml                 single-fact changes that turn a violation into ALLOW
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="validate, inspect, test and probe policy packs", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    lint = psub.add_parser("lint", help="validate packs (exit 1 on errors; with --strict on warnings too)")
    lint.add_argument("packs", nargs="*", metavar="NAME|PATH",
                      help="default: every bundled pack; - reads one pack from standard input")
    lint.add_argument("--strict", action="store_true", help="treat warnings as errors")
    lint.set_defaults(func=run_lint)
    show = psub.add_parser("show", help="print every field of a pack's vocabulary, rules and constraints")
    show.add_argument("pack", metavar="NAME|PATH")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=run_show)
    lst = psub.add_parser("list", help="list the bundled packs")
    lst.set_defaults(func=run_list)
    test = psub.add_parser(
        "test", help="run example tables against a pack (exit 1 on a failure or low coverage)",
        description="Run example tables (docs/examples-format.md) against a pack. Prints each example's "
                    "result with the reason, then rule and constraint coverage. Exit 1 when an example fails "
                    "or coverage is below --min-coverage.")
    test.add_argument("pack", metavar="NAME|PATH")
    test.add_argument("tables", nargs="*", metavar="EXAMPLES.yaml",
                      help="default: PACK.examples.yaml beside the pack (the repo's table for a bundled pack)")
    test.add_argument("--format", choices=("text", "json", "junit"), default="text")
    test.add_argument("--min-coverage", type=float, default=0.0, metavar="PERCENT",
                      help="fail when rule+constraint coverage is lower (default 0: report only)")
    test.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the report here (default stdout)")
    test.set_defaults(func=run_test)
    probe = psub.add_parser(
        "probe", help="search for laundering paths: one-fact changes that turn a violation into ALLOW",
        description="From each example the pack judges a VIOLATION, change one fact at a time (kind, each "
                    "category, recipient type, actor organisation and type, identifiability, purpose, region) "
                    "and list every change that turns it into ALLOW, with the permit that allowed it. Findings "
                    "recorded in the reviewed-findings file are not listed. Exit 1 when unreviewed findings "
                    "remain.")
    probe.add_argument("pack", metavar="NAME|PATH")
    probe.add_argument("tables", nargs="*", metavar="EXAMPLES.yaml", help="default: as for 'policy test'")
    probe.add_argument("--reviewed", type=Path, metavar="FILE",
                       help="reviewed findings (default: PACK.reviewed.yaml beside the pack; "
                            "tests/data/reviewed/<id>.yaml for a bundled pack)")
    probe.add_argument("--all", action="store_true", help="list reviewed findings too")
    probe.add_argument("--skeleton", type=Path, metavar="FILE",
                       help="write the unreviewed findings as a reviewed-findings skeleton to fill in")
    probe.add_argument("--format", choices=("text", "json"), default="text")
    probe.set_defaults(func=run_probe)


def run_lint(args: argparse.Namespace) -> int:
    """Lint packs; ``-`` is read by the loader itself (auditor.policy.yamlsrc), named ``<stdin>``."""
    if args.packs.count("-") > 1:
        raise ConfigError("'-' (standard input) can be given once")
    failed = 0
    for name in args.packs or bundled_pack_names():
        try:
            pack = load_pack(name)
        except PolicyLintError as exc:
            failed += 1
            for f in exc.findings:
                print(f"{f}")
            continue
        except PolicyError as exc:
            failed += 1
            print(str(exc))
            continue
        for w in pack.pack.warnings:
            print(str(w))
        if args.strict and pack.pack.warnings:
            failed += 1
        print(f"ok  {pack.id:<12} {len(pack.pack.permits):>3} permits {len(pack.pack.constraints):>3} "
              f"constraints  {len(pack.pack.warnings)} warnings  {pack.content_hash}  {pack.pack.path}")
    return 1 if failed else 0


def run_list(args: argparse.Namespace) -> int:
    for name in bundled_pack_names():
        pack = load_pack(name).pack
        print(f"{pack.id:<12} {len(pack.permits):>3} permits {len(pack.constraints):>3} constraints  {pack.title}")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from auditor.policy.testrun import RENDERERS, default_examples, run_tables

    pack = load_pack(args.pack)
    tables = [Path(t) for t in args.tables] or default_examples(pack)
    report = run_tables(pack, tables, args.min_coverage)
    text = RENDERERS[args.format](report)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        print(f"{'OK' if report.ok else 'FAILED'}: {len(report.outcomes) - len(report.failures)}/"
              f"{len(report.outcomes)} pass, coverage {report.coverage.percent:.0f}%; report in {args.output}")
    else:
        sys.stdout.write(text)
    return 0 if report.ok else 1


def default_reviewed(pack: Pack) -> Path:
    from auditor.policy.loader import packs_dir

    path = Path(pack.path)
    if path.parent.resolve() == packs_dir().resolve():
        return Path(__file__).resolve().parents[2] / "tests" / "data" / "reviewed" / f"{pack.id}.yaml"
    return path.with_name(f"{path.stem}.reviewed.yaml")


def run_probe(args: argparse.Namespace) -> int:
    from auditor.policy.examples import load_examples
    from auditor.policy.probe import load_reviews, probe, render_reviews, triage
    from auditor.policy.testrun import default_examples

    pack = load_pack(args.pack)
    tables = [Path(t) for t in args.tables] or default_examples(pack)
    examples = [ex for t in tables for ex in load_examples(t, pack_id=pack.id)]
    reviewed_path = args.reviewed or default_reviewed(pack.pack)
    reviews = load_reviews(reviewed_path, pack.id, {ex.id for ex in examples}) if reviewed_path.is_file() else []
    findings = probe(pack, examples)
    open_findings, stale = triage(findings, reviews)
    shown = findings if args.all else open_findings
    if args.skeleton is not None:
        args.skeleton.write_text(render_reviews(pack.id, open_findings), encoding="utf-8")
    if args.format == "json":
        reviewed_keys = {r.finding.key for r in reviews}
        print(json.dumps({
            "pack": pack.id, "examples": len(examples), "findings": len(findings), "unreviewed": len(open_findings),
            "reviewed_file": str(reviewed_path) if reviewed_path.is_file() else None,
            "list": [{"example": f.example, "change": f.change, "allowed_by": f.allowed_by,
                      "reviewed": f.key in reviewed_keys} for f in shown],
            "stale_reviews": [{"example": r.finding.example, "change": r.finding.change,
                               "allowed_by": r.finding.allowed_by, "line": r.line} for r in stale],
        }, indent=2))
    else:
        from auditor.policy import Verdict, evaluate

        violating = sum(1 for ex in examples if evaluate(ex.event, pack).verdict is Verdict.VIOLATION)
        where = reviewed_path if reviewed_path.is_file() else "no reviewed-findings file"
        print(f"{pack.id}: probed the {violating} violating examples of {len(examples)}; {len(findings)} findings, "
              f"{len(findings) - len(open_findings)} reviewed ({where}), {len(open_findings)} unreviewed")
        for f in shown:
            print(f"  {f.example}: {f.change}  ->  ALLOW by {f.allowed_by}")
        for r in stale:
            print(f"  stale review (no longer a finding), {reviewed_path}:{r.line}: {r.finding.example}: "
                  f"{r.finding.change} ({r.finding.allowed_by})")
        if open_findings:
            print("each finding is either allowed by the policy's text (record it in the reviewed-findings file with "
                  "an example that shows it) or a hole in the pack (fix the pack)")
    return 1 if open_findings else 0


# ---------------------------------------------------------------- show

def _term(t: Term) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if t.clause:
        out["clause"] = t.clause
    if t.quote:
        out["quote"] = t.quote
    if t.holds:
        out["holds"] = list(t.holds)
    if t.countries:
        out["countries"] = list(t.countries)
    if t.maps_to:
        out["maps_to"] = list(t.maps_to)
    return out


def rule_to_dict(r: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id, "clause": r.clause, "quote": r.quote, "severity": r.severity}
    if r.explain:
        out["explain"] = r.explain
    out["when"] = dict(r.scope.source)
    if r.forbid:
        out["forbid"] = True
    else:
        out["require"] = list(r.require_source)
    if r.absent:
        out["absent"] = dict(r.absent)
    return out


def pack_to_dict(pack: Pack) -> dict[str, Any]:
    terms = lambda d: {k: _term(t) for k, t in d.items()}  # noqa: E731
    return {
        "language": 2, "pack": pack.id, "title": pack.title, "version": pack.version, "source": pack.source,
        "hash": pack.content_hash, "minor_age": pack.minor_age, "notes": list(pack.notes),
        "absent": dict(pack.absent),
        "default": {"clause": pack.default.clause, "quote": pack.default.quote},
        "vocabulary": {"elements": terms(pack.elements), "categories": terms(pack.categories),
                       "purposes": terms(pack.purposes), "recipients": terms(pack.recipients),
                       "roles": terms(pack.role_terms),
                       "regions": {k: list(t.countries) for k, t in pack.regions.items()}},
        "permits": [rule_to_dict(r) for r in pack.permits],
        "constraints": [rule_to_dict(r) for r in pack.constraints],
    }


def _flow(value: Any) -> str:
    from auditor.policy.syntax import flow

    return flow(value)


def run_show(args: argparse.Namespace) -> int:
    pack = load_pack(args.pack).pack
    doc = pack_to_dict(pack)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    out = [f"{pack.title}  [{pack.id} v{pack.version}, language 2]  {pack.content_hash}",
           f"source: {pack.source or Path(pack.path).name}   minors: under {pack.minor_age}",
           f"default deny cites {pack.default.clause}: \"{pack.default.quote}\""]
    out += [f"note: {n}" for n in pack.notes]
    out += [f"absent {fact}: {reading}" for fact, reading in pack.absent]
    for title, terms in (("elements", pack.elements), ("categories", pack.categories), ("purposes", pack.purposes),
                         ("recipients", pack.recipients), ("roles", pack.role_terms)):
        if not terms:
            continue
        out.append(f"\n{title}:")
        for tid, t in terms.items():
            extra = "".join(f"  {k}: {_flow(v)}" for k, v in _term(t).items() if k not in ("clause", "quote"))
            cited = f"  {t.clause}: \"{t.quote}\"" if t.clause or t.quote else ""
            out.append(f"  {tid}{cited}{extra}")
    declared = {k: t for k, t in pack.regions.items() if k not in ("EEA", "EU", "EU_ADEQUACY")}
    if declared:
        out.append("\nregions:")
        out += [f"  {k}: {_flow(list(t.countries))}" for k, t in declared.items()]
    for title, rules in (("permits", pack.permits), ("constraints", pack.constraints)):
        out.append(f"\n{title}:")
        for r in rules:
            d = rule_to_dict(r)
            out.append(f"  {r.id}  [{r.severity}]  clause {r.clause}")
            out.append(f"      when {_flow(d['when']) if d['when'] else 'any event'}")
            if r.forbid:
                out.append("      forbid: everything in scope")
            else:
                out += [f"      require {_flow(item)}" for item in r.require_source]
            out += [f"      absent {fact}: {reading}" for fact, reading in r.absent]
            if r.explain:
                out.append(f"      explain: {r.explain}")
            out.append(textwrap.indent(textwrap.fill(f"\"{r.quote}\"", 96), " " * 6))
    print("\n".join(out))
    return 0
