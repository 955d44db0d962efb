"""States in which the group audits nothing: some alert of deploy/prometheus/rules.yml must fire.

Each state is a set of scrape series an hour long, fed to promtool (Prometheus's rule engine)
with every alert of rules.yml expected silent at every minute. promtool then fails for each alert
that fires: the test needs at least one, and names the ones it expects.

The restart loop is what the daemon's own timers make of an instance whose every partition
stays paused (its chain head cannot be restored, a disagreement that does not heal): ready once
it has joined, until ``watchdog.progress_timeout_s`` (120 s) marks the partitions stalled; ended
by the watchdog (exit 4) ``watchdog.stall_timeout_s`` (300 s) after it started
(tests/integration/test_daemon_ownership.py::test_an_instance_whose_every_partition_stays_paused_*);
restarted 5 s later (deploy/systemd/auditor.service RestartSec) and given its partition again
once the dead member's session (10 s) has timed out. No series lives 5 minutes in one state, so
no ``for: 5m`` alert fires, and the gauges that would show the stall across restarts (lag, last
audit) are only exported for restored partitions.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditor.config import Config

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
STEP_S = 15  # deploy/prometheus/prometheus.yml: scrape_interval and evaluation_interval
HOUR = 3600 // STEP_S
INSTANCE = {"job": "auditor", "instance": "a:9400"}
PARTITION = {**INSTANCE, "topic": "privacy-events", "partition": "0"}


def _sel(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _restart_loop() -> dict[str, list[str]]:
    """Per series, one sample per scrape ('stale': not in the scrape, or the scrape failed)."""
    defaults = Config()
    progress, stall = defaults.watchdog.progress_timeout_s, defaults.watchdog.stall_timeout_s
    restart, join = 10, 10          # RestartSec plus the interpreter's start; the dead member's session
    names = ["up", "auditor_ready", "auditor_partitions_assigned", "auditor_healthy", "auditor_start_time_seconds",
             "auditor_partition_blocked", "auditor_partition_stalled"]
    series: dict[str, list[str]] = {n: [] for n in names}
    t, start = 0, 0.0
    while len(series["up"]) < HOUR:
        at = t * STEP_S
        cycle = restart + stall
        phase = at % cycle
        if phase < restart:   # down: the scrape fails, every series of the process goes stale
            start = 0.0
            row = {"up": "0"} | {n: "stale" for n in names[1:]}
        else:
            lived = phase - restart
            start = start or float(1_800_000_000 + at)
            joined, stuck = lived >= join, lived >= join + progress
            row = {"up": "1", "auditor_ready": "1" if joined and not stuck else "0",
                   "auditor_partitions_assigned": "1" if joined else "0", "auditor_healthy": "1",
                   "auditor_start_time_seconds": f"{start:.0f}",
                   "auditor_partition_blocked": "1" if joined else "stale",
                   "auditor_partition_stalled": "1" if stuck else ("0" if joined else "stale")}
        for n in names:
            series[n].append(row[n])
        t += 1
    return series


def _idle_group() -> dict[str, list[str]]:
    """Two ready members, neither holding a partition (the subscription matches nothing)."""
    return {"auditor_ready": ["1"] * HOUR, "auditor_partitions_assigned": ["0"] * HOUR,
            "auditor_ready@b": ["1"] * HOUR, "auditor_partitions_assigned@b": ["0"] * HOUR,
            "up": ["1"] * HOUR, "up@b": ["1"] * HOUR}


def _holder_unscraped() -> dict[str, list[str]]:
    """Member b holds the partitions, its metrics endpoint is down; member a is idle and ready."""
    return {"auditor_ready": ["1"] * HOUR, "auditor_partitions_assigned": ["0"] * HOUR, "up": ["1"] * HOUR,
            "up@b": ["0"] * HOUR}


def _fired(tmp_path: Path, promtool: str, series: dict[str, list[str]]) -> set[str]:
    """The alerts of rules.yml that fire at some whole minute of the hour of ``series``."""
    rules = yaml.safe_load((PROM / "rules.yml").read_text())
    alerts = sorted(r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r)
    inputs: list[dict[str, Any]] = []
    for key, values in series.items():
        name, _, member = key.partition("@")
        labels = {**INSTANCE, "instance": f"{member}:9400"} if member else INSTANCE
        if name in ("auditor_partition_blocked", "auditor_partition_stalled"):
            labels = {**PARTITION, **labels}
        inputs.append({"series": _sel(name, labels), "values": " ".join(values)})
    cases = [{"eval_time": f"{m}m", "alertname": a, "exp_alerts": []} for m in range(1, 60) for a in alerts]
    (tmp_path / "rules.yml").write_text((PROM / "rules.yml").read_text())
    test = tmp_path / "gaps_test.yml"
    test.write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": f"{STEP_S}s", "tests": [
        {"name": "gap", "interval": f"{STEP_S}s", "input_series": inputs, "alert_rule_test": cases}]}))
    out = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True, timeout=300)
    fired = {a for a in alerts if f"alertname: {a}," in out.stdout + out.stderr}
    assert (out.returncode == 0) == (not fired), out.stdout[-2000:] + out.stderr[-2000:]
    return fired


def test_an_instance_in_a_watchdog_restart_loop_pages(tmp_path: Path, promtool: str) -> None:
    """Before: nothing fired in the hour (the paused partition's instance restarted every 310 s)."""
    assert "AuditorInstanceRestarting" in _fired(tmp_path, promtool, _restart_loop())


@pytest.mark.parametrize("state", [_idle_group, _holder_unscraped], ids=lambda f: f.__name__.strip("_"))
def test_a_group_auditing_nothing_in_other_ways_pages(tmp_path: Path, promtool: str, state: Any) -> None:
    """These held up before: AuditorNoInstanceReady fires when no ready member holds a partition."""
    assert "AuditorNoInstanceReady" in _fired(tmp_path, promtool, state())
