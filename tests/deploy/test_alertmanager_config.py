"""amtool: the Alertmanager config loads, and routes page for critical alerts only."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


def receivers(amtool: str, *labels: str) -> set[str]:
    result = subprocess.run([amtool, "config", "routes", "test", "--config.file", str(CONFIG), *labels],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return set(result.stdout.strip().split(","))


def test_config_is_valid(amtool: str) -> None:
    result = subprocess.run([amtool, "check-config", str(CONFIG)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("severity, expected", [
    ("critical", {"pager", "ticket"}),
    ("high", {"ticket"}),
    ("medium", {"ticket"}),
    ("low", {"ticket"}),
    ("warning", {"ticket"}),
    ("info", {"ticket"}),
])
def test_only_critical_pages(amtool: str, severity: str, expected: set[str]) -> None:
    assert receivers(amtool, f"severity={severity}", "alertname=AnyAlert") == expected


def test_every_alert_routes_by_its_severity(amtool: str, rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        severity = rule["labels"]["severity"]
        if "{{" in severity:  # templated: the broken rule's own severity
            for value in ("critical", "high", "medium", "low"):
                got = receivers(amtool, f"alertname={rule['alert']}", f"severity={value}")
                assert ("pager" in got) == (value == "critical"), (rule["alert"], value, got)
            continue
        got = receivers(amtool, f"alertname={rule['alert']}", f"severity={severity}")
        assert ("pager" in got) == (severity == "critical"), (rule["alert"], got)
        assert "ticket" in got, (rule["alert"], got)
