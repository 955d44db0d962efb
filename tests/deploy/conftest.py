"""Shared fixtures for the deployment tests (deploy/): tools, the metrics contract, parsed files.

External tools (promtool, amtool, grafanalib) are skipped with a reason when missing on a
developer's machine, and fail the run when missing in CI (CI=true): deploy/install-prometheus.sh
installs promtool and amtool, the test extras install grafanalib.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

#: The metrics contract between the daemon (auditor/metrics.py), the alerts and the dashboard:
#: exported name -> (type, label names). Prometheus's own ``up`` is included.
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "auditor_events_consumed_total": ("counter", ("topic",)),
    "auditor_events_audited_total": ("counter", ("pack", "kind", "verdict")),
    "auditor_violations_total": ("counter", ("pack", "rule", "severity", "recipient_type", "purpose")),
    "auditor_dead_letters_total": ("counter", ("reason",)),
    "auditor_decision_latency_seconds": ("histogram", ()),
    "auditor_end_to_end_latency_seconds": ("histogram", ()),
    "auditor_consumer_lag": ("gauge", ("topic", "partition")),
    "auditor_transactions_total": ("counter", ("outcome",)),
    "auditor_trail_checkpoint_age_seconds": ("gauge", ("chain",)),
    "auditor_pack_info": ("gauge", ("pack", "hash")),
    "auditor_build_info": ("gauge", ("version", "python")),
    "auditor_start_time_seconds": ("gauge", ()),
    "auditor_ready": ("gauge", ()),
    "auditor_partitions_assigned": ("gauge", ()),
    "auditor_last_audit_timestamp_seconds": ("gauge", ("topic",)),
    "auditor_partition_blocked": ("gauge", ("topic", "partition")),
    "auditor_partition_stalled": ("gauge", ("topic", "partition")),
    "auditor_batch_splits_total": ("counter", ()),
    "auditor_healthy": ("gauge", ()),
    "auditor_schema_registry_up": ("gauge", ("registry",)),
    "auditor_schema_registry_errors_total": ("counter", ("reason",)),
    "auditor_trail_retention_finite": ("gauge", ("topic",)),
    "auditor_trail_forged_total": ("counter", ("chain",)),
    "auditor_trail_adopted_unsigned_total": ("counter", ("chain",)),
    "auditor_witness_failures_total": ("counter", ("witness", "reason")),
    "auditor_witness_cosigned_total": ("counter", ("witness",)),
    "auditor_witness_behind_seconds": ("gauge", ("witness",)),
    "auditor_ledger_facts_total": ("counter", ()),
    "auditor_ledger_facts_rejected_total": ("counter", ("reason",)),
    "auditor_ledger_corrections_total": ("counter", ("pack", "verdict_changed")),
    "auditor_ledger_late_facts_total": ("counter", ()),
    "auditor_ledger_catch_up_seconds": ("gauge", ()),
    "auditor_ledger_late_beyond_window_total": ("counter", ()),
    "auditor_ledger_facts_logged_late_total": ("counter", ("clock",)),
    "auditor_ledger_events_predated_total": ("counter", ("clock",)),
    "up": ("gauge", ()),
}

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                 "offset", "bool", "inf", "nan", "atan2"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(what: str, how: str) -> None:
    if in_ci():
        pytest.fail(f"{what} is missing in CI: {how}")
    pytest.skip(f"{what} is not installed ({how})")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(name, "run deploy/install-prometheus.sh")
    assert path is not None
    return path


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (a small tokenizer, not a full parser)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", s):
        if m.group(2) or m.group(1) in _PROMQL_WORDS:
            continue
        names.add(m.group(1))
    return names


def allowed_series_names() -> set[str]:
    """Names a query may select: the contract's, with _bucket/_sum/_count for histograms."""
    out = set()
    for name, (kind, _) in CONTRACT.items():
        if kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            out.add(name)
    return out


def load_module(path: Path) -> ModuleType:
    """Import a script of deploy/ (not a package) by path."""
    name = f"_deploy_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_tool("amtool")


@pytest.fixture(scope="session")
def prometheus() -> str:
    """The Prometheus server binary (test_restart_alert_prometheus.py)."""
    return require_tool("prometheus")


@pytest.fixture(scope="session")
def rules() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/prometheus/rules.yml."""
    doc = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="session")
def dashboard() -> ModuleType:
    return load_module(DEPLOY / "grafana" / "dashboard.py")


@pytest.fixture(scope="session")
def make_prometheusrule() -> ModuleType:
    return load_module(DEPLOY / "k8s" / "make_prometheusrule.py")


@pytest.fixture(scope="session")
def grafanalib() -> ModuleType:
    try:
        return importlib.import_module("grafanalib")
    except ModuleNotFoundError:
        _missing("grafanalib", "pip install grafanalib")
        raise


@pytest.fixture(scope="session")
def extract_metric_names() -> Callable[[str], set[str]]:
    return metric_names


@pytest.fixture(scope="session")
def contract() -> dict[str, tuple[str, tuple[str, ...]]]:
    return CONTRACT


@pytest.fixture(scope="session")
def allowed_names() -> set[str]:
    return allowed_series_names()
