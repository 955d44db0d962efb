"""AuditorInstanceRestarting with the real Prometheus server (attops), not promtool's replay.

Two exporters stand for two members: each serves the daemon's own metrics (``build_metrics``, which
sets ``auditor_start_time_seconds`` at start) and is stopped and started again as a restarted daemon
would be, with a real gap in between, so Prometheus writes its staleness markers as in production.
Prometheus scrapes and evaluates deploy/prometheus/rules.yml every second. One restart, or two, of
a member is silent; a third of the same member fires for that member only; the restarts of the
other member never add to it. Fails with the rule summed over the group (``sum(changes(...))``,
then a's two and b's one fire) or with a threshold of 1 or 2 (one or two restarts fire).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

EXPORTER = """
import signal, sys
from prometheus_client import CollectorRegistry, start_http_server
from auditor.metrics import build_metrics
registry = CollectorRegistry()
build_metrics(registry)
start_http_server(int(sys.argv[1]), addr="127.0.0.1", registry=registry)
print("serving", flush=True)
signal.sigwait({signal.SIGTERM})
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Member:
    def __init__(self, work: Path) -> None:
        self.port, self.script, self.proc = _free_port(), work / "exporter.py", None
        self.script.write_text(EXPORTER)
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(self.script), str(self.port)], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"serving"

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)

    def restart(self, api: str) -> None:
        self.stop()
        # a real gap: Prometheus scrapes it as down (and so writes the series' staleness markers) first
        _until(lambda: _query(api, f'up{{instance="{self.instance}"}}') == {self.instance: "0"},
               f"{self.instance} scraped as down")
        self.start()

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def group(tmp_path: Path, prometheus: str) -> Iterator[tuple[str, Member, Member]]:
    a, b = Member(tmp_path), Member(tmp_path)
    port = _free_port()
    (tmp_path / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "rules.yml")],
        "scrape_configs": [{"job_name": "auditor", "static_configs": [{"targets": [a.instance, b.instance]}]}]}))
    with (tmp_path / "prometheus.log").open("wb") as out:
        prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _query(api, 'count(up{job="auditor"} == 1)') == {None: "2"}, "both members scraped")
        yield api, a, b
    finally:
        for m in (a, b):
            m.stop()
        prom.terminate()
        prom.wait(30)


def _query(api: str, expr: str) -> dict[str | None, str]:
    try:
        with urllib.request.urlopen(f"{api}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=5) as r:
            result = json.load(r)["data"]["result"]
    except OSError:
        return {}
    return {x["metric"].get("instance"): x["value"][1] for x in result}


def _firing(api: str) -> set[str]:
    with urllib.request.urlopen(f"{api}/api/v1/alerts", timeout=5) as r:
        alerts = json.load(r)["data"]["alerts"]
    return {x["labels"].get("instance", "(no instance)") for x in alerts
            if x["labels"]["alertname"] == "AuditorInstanceRestarting" and x["state"] == "firing"}


def _until(check, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _evaluations(api: str, n: int) -> None:
    """Wait until the group of AuditorInstanceRestarting has been evaluated ``n`` more times."""
    def last() -> str:
        with urllib.request.urlopen(f"{api}/api/v1/rules", timeout=5) as r:
            groups = json.load(r)["data"]["groups"]
        (group,) = [g for g in groups if any(x.get("name") == "AuditorInstanceRestarting" for x in g["rules"])]
        return str(group["lastEvaluation"])

    seen = [last()]

    def evaluated() -> bool:
        now = last()
        if now != seen[-1]:
            seen.append(now)
        return len(seen) > n
    _until(evaluated, f"{n} evaluations of the rules")


def _changes(api: str) -> dict[str | None, str]:
    return _query(api, 'changes(auditor_start_time_seconds{job="auditor"}[1h])')


def test_the_third_restart_of_one_member_fires_for_it_alone(group: tuple[str, Member, Member]) -> None:
    api, a, b = group
    a.restart(api)
    b.restart(api)
    _until(lambda: _changes(api) == {a.instance: "1", b.instance: "1"}, "one change per member")
    a.restart(api)
    _until(lambda: _changes(api) == {a.instance: "2", b.instance: "1"}, "a's second restart seen")
    # the second of two evaluations that completed after the second change was seen started after it
    _evaluations(api, 2)
    assert _firing(api) == set(), "two restarts of a, one of b"
    a.restart(api)
    _until(lambda: _changes(api).get(a.instance) == "3", "a's third restart seen")
    _until(lambda: _firing(api) == {a.instance}, "AuditorInstanceRestarting for a only", timeout=15)
