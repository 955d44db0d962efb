"""promtool: the Prometheus config and alert rules load, and the rules' unit tests pass."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_rules_load(promtool: str) -> None:
    result = run(promtool, "check", "rules", PROM / "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_loads_with_its_rules(promtool: str) -> None:
    result = run(promtool, "check", "config", PROM / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", PROM / "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_file_sd_example_is_valid_json_targets() -> None:
    # Named *.json.example so the compose stack does not scrape the example hosts.
    import json

    groups = json.loads((PROM / "targets" / "auditor.json.example").read_text())
    assert groups and all(g["targets"] and all(":" in t for t in g["targets"]) for g in groups)
    scrape = yaml.safe_load((PROM / "prometheus.yml").read_text())["scrape_configs"]
    auditor = next(job for job in scrape if job["job_name"] == "auditor")
    assert auditor["file_sd_configs"][0]["files"] == ["targets/*.json"]
