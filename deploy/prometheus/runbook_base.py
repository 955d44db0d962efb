"""Point every alert's ``runbook_url`` at where your copy of deploy/RUNBOOK.md is published.

    python deploy/prometheus/runbook_base.py https://wiki.example.org/auditor/RUNBOOK.md
    python deploy/k8s/make_prometheusrule.py        # then regenerate the PrometheusRule

Each alert of rules.yml carries ``runbook_url: "<base>#<alert name in lower case>"`` (the
anchor of its section in RUNBOOK.md); this rewrites the base in rules.yml and rules_test.yml
(whose expected annotations must match) and keeps every anchor. The shipped base is DEFAULT_BASE.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_BASE = "https://auditor.example.com/deploy/RUNBOOK.md"
FILES = (HERE / "rules.yml", HERE / "rules_test.yml")
_URL = re.compile(r'(runbook_url: ")([^"#]*)(#[a-z0-9-]+")')


def rebase(text: str, base: str) -> str:
    """``text`` with every runbook_url's base replaced by ``base`` (anchors kept)."""
    return _URL.sub(lambda m: m.group(1) + base + m.group(3), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="URL of the published RUNBOOK.md, without '#'")
    parser.add_argument("files", nargs="*", type=Path, default=list(FILES), help="rule files to rewrite")
    args = parser.parse_args(argv)
    if "#" in args.base or '"' in args.base or not re.match(r"^[a-z][a-z0-9+.-]*://", args.base):
        print(f"runbook_base: not an absolute URL without '#': {args.base}", file=sys.stderr)
        return 2
    for path in args.files:
        path.write_text(rebase(path.read_text(encoding="utf-8"), args.base.rstrip("/")), encoding="utf-8")
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
