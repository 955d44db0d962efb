"""``python -m auditor.policy.selfcheck PACK...``: lint a pack, run its example table, show coverage."""

from __future__ import annotations

import sys

from auditor.errors import PolicyError
from auditor.policy.engine import load_pack
from auditor.policy.examples import coverage, examples_path, load_examples, run_examples


def check(pack_id: str) -> bool:
    try:
        pack = load_pack(pack_id)
    except PolicyError as exc:
        print(f"LINT FAILED\n{exc}")
        return False
    print(f"{pack_id}: lint ok, {len(pack.pack.rules)} rules, {pack.content_hash[:19]}")
    path = examples_path(pack_id)
    examples = load_examples(path)
    outcomes = run_examples(examples, pack)
    bad = [o for o in outcomes if o.problems]
    for o in bad:
        print(f"  FAIL {o.example.id} ({o.example.title}): {'; '.join(o.problems)}")
        for v in o.decision.violations:
            print(f"       - {v.rule_id}: {v.reason}")
    cov = coverage(pack, outcomes)
    print(f"  examples: {len(outcomes) - len(bad)}/{len(outcomes)} pass; rule coverage {cov.percent:.0f}%")
    for m in cov.missing:
        print(f"  UNCOVERED {m}")
    return not bad and not cov.missing and len(outcomes) >= 15


def main(argv: list[str]) -> int:
    ok = all([check(p) for p in argv or []])
    return 0 if ok and argv else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
