"""Wrap deploy/prometheus/rules.yml into a Prometheus Operator PrometheusRule.

    python deploy/k8s/make_prometheusrule.py           # rewrite deploy/k8s/prometheusrule.yaml
    python deploy/k8s/make_prometheusrule.py --check   # exit 1 if it is out of date

rules.yml stays the one source of the alerts (promtool tests it); this only adds the CRD
envelope. tests/deploy/test_manifests.py fails when the generated file is stale.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "rules.yml"
OUTPUT = HERE / "prometheusrule.yaml"

HEADER = (
    "# GENERATED from deploy/prometheus/rules.yml by deploy/k8s/make_prometheusrule.py: do not edit.\n"
    "# Regenerate after changing the rules: python deploy/k8s/make_prometheusrule.py\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as in rules.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def build(rules_text: str) -> dict[str, Any]:
    doc = yaml.safe_load(rules_text)
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ValueError(f"{RULES} has no 'groups' list")
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "auditor",
            "labels": {"app.kubernetes.io/name": "auditor", "app.kubernetes.io/component": "alerts"},
        },
        "spec": {"groups": doc["groups"]},
    }


def render(rules_path: Path = RULES) -> str:
    body = yaml.dump(build(rules_path.read_text(encoding="utf-8")), Dumper=_Dumper,
                     sort_keys=False, width=1_000_000, allow_unicode=True)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the output is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run python deploy/k8s/make_prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
