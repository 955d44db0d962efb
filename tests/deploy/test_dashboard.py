"""The Grafana dashboard: generated JSON up to date, every panel queried, only contract metrics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
JSON_PATH = REPO / "deploy" / "grafana" / "auditor.json"


def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_generated_json_is_up_to_date(dashboard: ModuleType, grafanalib: ModuleType) -> None:
    assert JSON_PATH.read_text(encoding="utf-8") == dashboard.render(), (
        "deploy/grafana/auditor.json is stale: run python deploy/grafana/dashboard.py")


def test_every_panel_has_a_query() -> None:
    doc = json.loads(JSON_PATH.read_text(encoding="utf-8"))
    panels = [p for p in _panels(doc) if p["type"] != "row"]
    assert panels
    for panel in panels:
        exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
        assert exprs and all(exprs), f"panel {panel['title']!r} has no query"


def test_panel_ids_are_unique_and_panels_fit_the_grid() -> None:
    doc = json.loads(JSON_PATH.read_text(encoding="utf-8"))
    panels = _panels(doc)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]


def test_all_queries_lists_every_query_of_the_json(dashboard: ModuleType) -> None:
    doc = json.loads(JSON_PATH.read_text(encoding="utf-8"))
    in_json = [t["expr"] for p in _panels(doc) for t in p.get("targets", [])]
    expanded = [e.replace("$__rate_interval", "5m") for e in in_json]
    assert dashboard.all_queries() == expanded
    assert not any("$" in q for q in dashboard.all_queries()), "macros left in all_queries()"


def test_queries_use_only_contract_metrics(dashboard: ModuleType, allowed_names: set[str],
                                           extract_metric_names: Callable[[str], set[str]]) -> None:
    for query in dashboard.all_queries():
        names = extract_metric_names(query)
        assert names, f"no metric in {query!r}"
        assert names <= allowed_names, f"{query!r} uses {sorted(names - allowed_names)}"


def test_dashboard_covers_the_required_views(dashboard: ModuleType) -> None:
    queries = "\n".join(dashboard.all_queries())
    for needle in ("auditor_events_consumed_total", 'verdict', "by (pack, rule)", "by (recipient_type)",
                   "by (purpose)", "auditor_dead_letters_total", "auditor_consumer_lag",
                   "histogram_quantile(0.5,", "histogram_quantile(0.99,",
                   "auditor_trail_checkpoint_age_seconds", 'up{job="auditor"}', "auditor_ready"):
        assert needle in queries, needle


def test_queries_parse_as_promql(dashboard: ModuleType, promtool: str, tmp_path: Path) -> None:
    # promtool has no "parse" command: load the queries as recording rules and check those.
    rules = [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(dashboard.all_queries())]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_use_only_contract_metrics(rules: list[dict[str, Any]], allowed_names: set[str],
                                               extract_metric_names: Callable[[str], set[str]]) -> None:
    for rule in rules:
        names = extract_metric_names(rule["expr"])
        assert names <= allowed_names, f"{rule['alert']} uses {sorted(names - allowed_names)}"


def test_metric_name_extraction(extract_metric_names: Callable[[str], set[str]]) -> None:
    expr = ('sum by (pack) (rate(auditor_events_audited_total{verdict="VIOLATION", x=~"a|b"}[15m] '
            'offset 5m)) / ignoring (le) group_left histogram_quantile(0.99, rate(x_bucket[1m])) '
            'and on (topic) up == 1e3')
    assert extract_metric_names(expr) == {"auditor_events_audited_total", "x_bucket", "up"}


def test_contract_matches_the_daemons_metrics(contract: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    metrics = pytest.importorskip("auditor.metrics")
    from prometheus_client import CollectorRegistry

    m = metrics.build_metrics(CollectorRegistry())
    from auditor.stream.ledgerfeed import LedgerMetrics

    ledger = LedgerMetrics.build(m.registry, ("ipasar",))  # the subject ledger's, registered when ledger.dir is set
    exported = {}
    for family in m.registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        exported[name] = family.type
    declared = {name: kind for name, (kind, _) in contract.items() if name != "up"}
    assert exported == declared
    labels = {}
    for value in [*vars(m).values(), *ledger]:
        if hasattr(value, "_labelnames"):
            name = value._name + ("_total" if value._type == "counter" else "")
            labels[name] = tuple(value._labelnames)
    assert labels == {name: lbl for name, (_, lbl) in contract.items() if name != "up"}
