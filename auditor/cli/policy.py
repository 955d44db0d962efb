"""``auditor policy lint|show|list``: validate and inspect policy packs."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from auditor.errors import PolicyError, PolicyLintError
from auditor.policy import bundled_pack_names, load_pack
from auditor.policy.model import Pack, Rule

HELP = """\
Validate and inspect policy packs.

examples:
  auditor policy list                      the bundled packs
  auditor policy lint ipasar ./my.yaml     validate packs; errors name file, line and fault
  auditor policy show inper                vocabulary and rules, with the clauses they quote
  auditor policy show inper --json         the same as JSON, for tools
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="validate and inspect policy packs", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    lint = psub.add_parser("lint", help="validate packs (exit 1 on findings)")
    lint.add_argument("packs", nargs="*", metavar="NAME|PATH", help="default: every bundled pack")
    lint.set_defaults(func=run_lint)
    show = psub.add_parser("show", help="print a pack's vocabulary and rules")
    show.add_argument("pack", metavar="NAME|PATH")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=run_show)
    lst = psub.add_parser("list", help="list the bundled packs")
    lst.set_defaults(func=run_list)


def run_lint(args: argparse.Namespace) -> int:
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
        print(f"ok  {pack.id:<12} {len(pack.pack.rules):>3} rules  {pack.content_hash}  {pack.pack.path}")
    return 1 if failed else 0


def run_list(args: argparse.Namespace) -> int:
    for name in bundled_pack_names():
        pack = load_pack(name).pack
        print(f"{pack.id:<12} {len(pack.rules):>3} rules  {pack.title}")
    return 0


def _scope(rule: Rule) -> dict[str, object]:
    s = rule.scope
    out: dict[str, object] = {}
    for key in ("kinds", "recipients", "purposes", "categories"):
        value = getattr(s, key)
        if value is not None:
            out[key] = sorted(v.value if hasattr(v, "value") else v for v in value)
    for key in ("minor", "cross_border"):
        if getattr(s, key) is not None:
            out[key] = getattr(s, key)
    return out


def pack_to_dict(pack: Pack) -> dict[str, object]:
    terms = lambda d: {k: {"clause": t.clause, "quote": t.quote} for k, t in d.items()}  # noqa: E731
    return {
        "pack": pack.id, "title": pack.title, "version": pack.version, "source": pack.source,
        "hash": pack.content_hash, "minor_age": pack.minor_age,
        "default": {"clause": pack.default.clause, "quote": pack.default.quote},
        "vocabulary": {"categories": terms(pack.categories), "purposes": terms(pack.purposes),
                       "recipients": terms(pack.recipients), "roles": sorted(pack.roles)},
        "rules": [{"id": r.id, "effect": r.effect.value, "severity": r.severity, "clause": r.clause,
                   "quote": r.quote, "when": _scope(r), "require": list(r.require_source)}
                  for r in pack.rules],
    }


def run_show(args: argparse.Namespace) -> int:
    pack = load_pack(args.pack).pack
    doc = pack_to_dict(pack)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    print(f"{pack.title}  [{pack.id} v{pack.version}]  {pack.content_hash}")
    print(f"source: {pack.source or Path(pack.path).name}   minors: under {pack.minor_age}")
    print(f"default deny cites {pack.default.clause}: \"{_short(pack.default.quote)}\"\n")
    for title, terms in (("categories", pack.categories), ("purposes", pack.purposes),
                         ("recipients", pack.recipients)):
        print(f"{title}:")
        for tid, t in terms.items():
            print(f"  {tid:<28} {t.clause:<10} \"{_short(t.quote, 60)}\"")
    if pack.roles:
        print(f"roles: {', '.join(sorted(pack.roles))}")
    print("\nrules:")
    for r, d in zip(pack.rules, doc["rules"], strict=True):  # type: ignore[call-overload]
        print(f"  {r.effect.value.upper():<8} {r.id}  [{r.severity}]  clause {r.clause}")
        print(f"           when {json.dumps(d['when'])}")
        if r.conditions:
            print(f"           require {json.dumps(d['require'])}")
        print(textwrap.indent(textwrap.fill(f"\"{r.quote}\"", 90), " " * 11))
    return 0


def _short(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
