"""Helpers for the end-to-end tests: child processes, a webhook receiver, bounded polling, and the
test copies of the shipped Prometheus/Alertmanager configuration.

The test configurations are derived from the shipped files by documented, mechanical rewrites
only, so the rules and routes under test are the ones in ``deploy/``:

* :func:`shorten_for_durations` divides every ``for:`` duration of ``rules.yml`` by
  :data:`FOR_DIVISOR` (``5m`` becomes ``5s``) and changes nothing else, byte for byte;
* :func:`alertmanager_test_config` points each receiver's webhooks at the test receiver and sets
  every ``group_wait``/``group_interval`` present in the route tree to :data:`AM_GROUP_WAIT`;
* :func:`prometheus_test_config` keeps the shipped ``auditor`` scrape job (its name is part of
  the alerts' contract) with the test daemon as its only static target, scraping and evaluating
  every second.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

T = TypeVar("T")

#: ``for:`` durations of the shipped rules are divided by this in the test copy (5m -> 5s).
FOR_DIVISOR = 60
#: Prometheus's scrape and rule evaluation interval in the test, seconds.
SCRAPE_S = 1
#: group_wait and group_interval of every route that sets them, in the test Alertmanager.
AM_GROUP_WAIT = "1s"

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
             "y": 31_536_000_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_FOR_LINE = re.compile(r"^(?P<indent>[ \t]+)for:[ \t]*(?P<value>\S+)[ \t]*$", re.MULTILINE)


# --------------------------------------------------------------------------- environment


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(*names: str) -> str:
    """The first of ``names`` on PATH; skip when none is (fail in CI, where they must exist)."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    what = " or ".join(names)
    if in_ci():
        pytest.fail(f"{what} is missing in CI: run deploy/install-prometheus.sh")
    pytest.skip(f"{what} is not installed (run deploy/install-prometheus.sh)")
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- polling and HTTP


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, *,
               detail: Callable[[], str] = lambda: "", interval: float = 0.25) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``detail()`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = probe()
        except (OSError, ValueError) as exc:  # not up yet, connection refused, bad JSON
            value, last_error = None, f"{type(exc).__name__}: {exc}"
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = detail()
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f"\nlast error: {last_error}" if last_error else "")
                                 + (f"\n{extra}" if extra else ""))
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - localhost only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(url: str, timeout: float = 5.0) -> Any:
    status, body = http_get(url, timeout)
    if status != 200:
        raise ValueError(f"GET {url}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def prom_query(base_url: str, expr: str) -> list[dict[str, Any]]:
    """Instant query; the result as a list of ``{"metric": ..., "value": [t, "v"]}``."""
    doc = http_json(f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    if doc.get("status") != "success":
        raise ValueError(f"query {expr!r} failed: {doc}")
    data = doc["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return list(data["result"])


# --------------------------------------------------------------------------- child processes


class Service:
    """A child process in its own process group, output to a log file, stopped in ``finally``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.name, self.argv, self.log_path = name, list(argv), log_path
        self.cwd, self.env = cwd, dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        # setpriv --pdeathsig: the child gets SIGTERM if pytest itself dies without cleaning up.
        setpriv = shutil.which("setpriv")
        prefix = [setpriv, "--pdeathsig", "TERM"] if setpriv else []
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(prefix + self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.cwd, env=self.env,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; idempotent."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in its group
        return proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"({self.name}: no log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.name} log ({self.log_path.name}) ---\n{tail}"

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited {self.proc.returncode if self.proc else '-'}"
        return f"{self.name} {state}\n{self.log_tail()}"


# --------------------------------------------------------------------------- webhook receiver


@dataclass(frozen=True)
class Received:
    """One alert of one Alertmanager webhook notification."""

    receiver: str   # the Alertmanager receiver name (payload "receiver")
    path: str       # the URL path it was posted to (/<receiver>)
    status: str     # firing | resolved
    labels: dict[str, str]
    at: float       # time.time() on arrival

    def brief(self, origin: float = 0.0) -> str:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()) if k != "alertname")
        when = f"+{self.at - origin:.1f}s " if origin else ""
        return f"{when}{self.receiver}: {self.labels.get('alertname')} [{self.status}] {{{labels}}}"


class WebhookReceiver:
    """Collects Alertmanager webhook POSTs on 127.0.0.1, one URL path per receiver."""

    def __init__(self) -> None:
        self.started = time.time()
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self.bad_posts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer._record(self.path, body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="e2e-webhook", daemon=True)

    def _record(self, path: str, body: bytes) -> None:
        now = time.time()
        try:
            doc = json.loads(body)
            alerts = [Received(str(doc["receiver"]), path, str(a["status"]), dict(a["labels"]), now)
                      for a in doc["alerts"]]
        except (ValueError, KeyError, TypeError) as exc:
            with self._lock:
                self.bad_posts.append(f"{path}: {exc}: {body[:200]!r}")
            return
        with self._lock:
            self._received.extend(alerts)

    def url(self, receiver: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{receiver}"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def find(self, labels: Mapping[str, str], *, receiver: str | None = None, status: str = "firing",
             since: float = 0.0) -> list[Received]:
        """Alerts whose labels include ``labels``, optionally at one receiver, arrived after ``since``."""
        return [r for r in self.received()
                if r.status == status and r.at >= since and (receiver is None or r.receiver == receiver)
                and all(r.labels.get(k) == v for k, v in labels.items())]

    def summary(self) -> str:
        got = self.received()
        lines = [r.brief(self.started) for r in sorted(got, key=lambda r: r.at)]
        text = (f"webhook received {len(got)} alert(s) in total (times from the receiver's start):\n  "
                + ("\n  ".join(lines) or "(none)"))
        if self.bad_posts:
            text += "\nunparseable posts: " + "; ".join(self.bad_posts)
        return text


# --------------------------------------------------------------------------- test configurations


def duration_ms(text: str) -> int:
    """A Prometheus duration (``1h30m``, ``5m``, ``0s``) in milliseconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS_MS[u] for n, u in parts)


def _format_ms(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def shorten_for_durations(rules_text: str, divisor: int = FOR_DIVISOR) -> tuple[str, dict[str, str]]:
    """Divide every ``for:`` of a rules file by ``divisor``; the only change made to the text.

    Returns the new text and ``{old: new}`` for the report. Checks that every rule's ``for`` was
    rewritten and that the parsed rules are otherwise identical.
    """
    changes: dict[str, str] = {}

    def shorten(m: re.Match[str]) -> str:
        old = m.group("value").strip("'\"")
        new = _format_ms(max(1000, duration_ms(old) // divisor)) if duration_ms(old) else old
        changes[old] = new
        return f"{m.group('indent')}for: {new}"

    new_text = _FOR_LINE.sub(shorten, rules_text)
    before, after = yaml.safe_load(rules_text), yaml.safe_load(new_text)
    old_rules = [r for g in before["groups"] for r in g["rules"]]
    new_rules = [r for g in after["groups"] for r in g["rules"]]
    assert len(old_rules) == len(new_rules)
    for old, new in zip(old_rules, new_rules, strict=True):
        assert ("for" in old) == ("for" in new), old.get("alert")
        if "for" in old:
            assert new["for"] == changes[str(old["for"])], (old.get("alert"), old["for"], new["for"])
        assert {k: v for k, v in old.items() if k != "for"} == {k: v for k, v in new.items() if k != "for"}
    return new_text, changes


def alertmanager_test_config(shipped: Mapping[str, Any], webhook: WebhookReceiver) -> dict[str, Any]:
    """The shipped Alertmanager config with test webhook URLs and short group timers."""
    cfg = copy.deepcopy(dict(shipped))
    for receiver in cfg["receivers"]:
        hooks = receiver.get("webhook_configs")
        assert hooks, f"receiver {receiver['name']} has no webhook_configs to redirect"
        for hook in hooks:
            hook["url"] = webhook.url(receiver["name"])
        unsupported = set(receiver) - {"name", "webhook_configs"}
        assert not unsupported, f"receiver {receiver['name']} also notifies via {unsupported}"

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = AM_GROUP_WAIT
        for child in route.get("routes") or []:
            shorten(child)

    shorten(cfg["route"])
    return cfg


def prometheus_test_config(shipped: Mapping[str, Any], *, rules_file: Path, target: str,
                           alertmanager: str) -> dict[str, Any]:
    """Scrape ``target`` as the shipped ``auditor`` job every second; alert to ``alertmanager``."""
    job = copy.deepcopy(next(j for j in shipped["scrape_configs"] if j["job_name"] == "auditor"))
    labels = (job.get("static_configs") or [{}])[0].get("labels") or {}
    job["static_configs"] = [{"targets": [target], **({"labels": labels} if labels else {})}]
    job.pop("file_sd_configs", None)
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s",
            "evaluation_interval": f"{SCRAPE_S}s",
            "external_labels": dict((shipped.get("global") or {}).get("external_labels") or {}),
        },
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [job],
    }


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    workdir: Path
    bootstrap: str
    events_topic: str
    daemon: Service
    alertmanager: Service
    prometheus: Service
    webhook: WebhookReceiver
    daemon_target: str   # host:port Prometheus scrapes (the ``instance`` label)
    prom_url: str
    am_url: str
    for_changes: dict[str, str]
    produced: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """Everything useful in a failure message: what arrived, and each process's log tail."""
        return "\n".join([self.webhook.summary(), self.daemon.describe(), self.prometheus.describe(),
                          self.alertmanager.describe()])

    def query(self, expr: str) -> list[dict[str, Any]]:
        return prom_query(self.prom_url, expr)

    def history(self, selector: str, window: str = "5m") -> str:
        """Recent samples of ``selector`` in Prometheus, one line per series, times from the start."""
        try:
            series = self.query(f"{selector}[{window}]")
        except (OSError, ValueError) as exc:
            return f"{selector}: unavailable ({exc})"
        lines = []
        for s in series:
            values = " ".join(f"+{float(t) - self.webhook.started:.0f}s={v}" for t, v in s["values"])
            lines.append(f"{selector} {s['metric']}: {values}")
        return "\n".join(lines) or f"{selector}: no samples"

    def prometheus_rules(self) -> list[dict[str, Any]]:
        """The alerting rules Prometheus has loaded."""
        groups = http_json(f"{self.prom_url}/api/v1/rules?type=alert")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def prometheus_alertmanagers(self) -> list[dict[str, Any]]:
        """The Alertmanagers Prometheus currently sends to."""
        return list(http_json(f"{self.prom_url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"])

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        """Active alerts in Prometheus (pending and firing)."""
        return list(http_json(f"{self.prom_url}/api/v1/alerts")["data"]["alerts"])

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, silenced and inhibited ones included."""
        return list(http_json(f"{self.am_url}/api/v2/alerts?active=true&silenced=true&inhibited=true"))

    def alertmanager_summary(self) -> str:
        try:
            held = self.alertmanager_alerts()
        except (OSError, ValueError) as exc:
            return f"Alertmanager alerts unavailable: {exc}"
        lines = sorted(f"{a['labels'].get('alertname')} [{a['status']['state']}] "
                       + ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k != "alertname")
                       for a in held)
        return "Alertmanager holds:\n  " + ("\n  ".join(lines) or "(none)")
