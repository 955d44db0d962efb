"""The end-to-end stack: the session's Kafka broker, the daemon as a subprocess, a real Alertmanager
posting to a webhook receiver inside the test, and a real Prometheus scraping the daemon with the
shipped alert rules. Everything runs on free 127.0.0.1 ports in a temporary directory and is
stopped and removed when the module's tests are done.

Order of start-up: the daemon (until /readyz), Alertmanager, then Prometheus with an empty rule
file; once Prometheus has scraped the daemon as ready, the shipped rules (``for:`` shortened,
see promkit) are swapped in and Prometheus reloaded. Prometheus applies discovered targets on
a 5s tick at start-up, so rules loaded from the start could see "no instance ready" for longer
than a shortened ``for`` before the first scrape: a test artefact that the shipped ``for: 5m``
covers in production.

The daemon is then fed two identical waves of events (see :func:`wave`) a few scrapes apart,
so that every counter has samples before and after an increase and every ``rate()`` is positive.

Set ``AUDITOR_E2E_KEEP=1`` to keep the temporary directory (generated configs and every log).

Prometheus and Alertmanager binaries (Debian's ``prometheus`` and ``prometheus-alertmanager``,
installed by ``deploy/install-prometheus.sh``) are required: the tests skip without them on a
developer's machine and fail without them in CI (``CI=true``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from promkit import (
    SCRAPE_S,
    Service,
    Stack,
    WebhookReceiver,
    alertmanager_test_config,
    free_port,
    http_get,
    prometheus_test_config,
    require_binary,
    shorten_for_durations,
    wait_until,
)

from auditor.events.model import Event
from auditor.policy import Verdict, evaluate, load_pack
from auditor.policy.examples import load_examples
from auditor.stream.generate import MALFORMED, templates
from auditor.stream.produce import produce
from auditor.trail.keys import KeyRing

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
EXAMPLES = REPO / "tests" / "data" / "examples"
PACKS = ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct")
COMPLIANT_PER_PACK = 4

#: Bounds of the start-up waits (seconds).
DAEMON_READY_S, TOOL_READY_S, SCRAPED_S = 90, 30, 30


# --------------------------------------------------------------------------- events


def _fresh(event: Event, n: int, tag: str) -> Event:
    """The event with a unique id and the current time (old event times would trip the latency alert)."""
    return dataclasses.replace(event, event_id=f"e2e-{tag}-{n}", occurred_at=datetime.now(UTC))


def _example(pack: str, example_id: str) -> Event:
    by_id = {ex.id: ex.event for ex in load_examples(EXAMPLES / f"{pack}.yaml")}
    return by_id[example_id]


def _violating(pack: str, event: Event, rules: set[str]) -> Event:
    decision = evaluate(event, load_pack(pack))
    got = {v.rule_id for v in decision.violations}
    assert decision.verdict is Verdict.VIOLATION and got == rules, (
        f"test data drifted: {event.event_id} should violate exactly {sorted(rules)}, got {sorted(got)}")
    return event


def wave(tag: str) -> list[Event | bytes]:
    """One wave of input: compliant events of every pack, three violations, malformed messages.

    * ``inper-le-nolegal`` (tests/data/examples/inper.yaml): a disclosure to law enforcement with
      no legal request, breaking the **critical** rule ``inper.disclose.legal-process``;
    * the same disclosure for an undeclared purpose: breaks only the **high** rule
      ``inper.undeclared-purpose``, with recipient type ``law_enforcement``, which the
      authority-disclosure alert pages for;
    * ``inper-mkt-optedout``: marketing to a customer who opted out, the **high** rule
      ``inper.use.marketing-unless-opted-out``;
    * the generator's malformed messages: two undecodable, one with an unknown schema.
    """
    le = _example("inper", "inper-le-nolegal")
    items: list[Event | bytes] = [
        _violating("inper", le, {"inper.disclose.legal-process"}),
        _violating("inper", dataclasses.replace(le, purpose="data_brokerage"), {"inper.undeclared-purpose"}),
        _violating("inper", _example("inper", "inper-mkt-optedout"),
                   {"inper.use.marketing-unless-opted-out"}),
    ]
    for pack in PACKS:
        items.extend(templates(load_pack(pack)).compliant[:COMPLIANT_PER_PACK])
    out: list[Event | bytes] = [_fresh(x, n, tag) if isinstance(x, Event) else x for n, x in enumerate(items)]
    return out + list(MALFORMED)


def _consumed(stack: Stack) -> float:
    result = stack.query("sum(auditor_events_consumed_total)")
    return float(result[0]["value"][1]) if result else 0.0


def _produce_and_wait_scraped(stack: Stack, items: list[Event | bytes]) -> None:
    stack.produced += produce(stack.bootstrap, stack.events_topic, items)
    wait_until(f"Prometheus to scrape {stack.produced} consumed events",
               lambda: _consumed(stack) >= stack.produced, SCRAPED_S, detail=stack.describe)
    # The daemon updates its other counters right after the consumed one: one more scrape has them.
    time.sleep(2 * SCRAPE_S)


# --------------------------------------------------------------------------- the stack


def _daemon_config(workdir: Path, bootstrap: str, prefix: str, port: int) -> Path:
    doc = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"{prefix}-auditor"},
        "topics": {"events": [f"{prefix}-events"], "audit": f"{prefix}.audit",
                   "violations": f"{prefix}.violations", "dead_letter": f"{prefix}.dead-letter"},
        "policy": {"packs": list(PACKS)},
        "keys_dir": str(workdir / "keys"),
        "trail_dir": str(workdir / "trail"),
        "http": {"host": "127.0.0.1", "port": port},
        "instance_id": f"{prefix}-1",
        "batch": {"max_events": 200, "max_ms": 100},
        "checkpoint": {"seconds": 2},
        "shutdown_timeout_s": 20,
    }
    path = workdir / "auditor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _wait_http_ok(service: Service, url: str, timeout: float) -> None:
    def ok() -> bool:
        assert service.alive(), f"{service.name} exited early\n{service.describe()}"
        return http_get(url, timeout=2)[0] == 200

    wait_until(f"{service.name} at {url}", ok, timeout, detail=service.describe)


def _load_rules(stack: Stack, rules_text: str) -> None:
    """Swap the test rules into Prometheus's (empty) rule file and reload; wait until all are loaded."""
    path = stack.workdir / "rules.yml"
    path.with_suffix(".tmp").write_text(rules_text)
    os.replace(path.with_suffix(".tmp"), path)
    expected = sum(1 for g in yaml.safe_load(rules_text)["groups"] for r in g["rules"] if "alert" in r)
    stack.prometheus.signal(signal.SIGHUP)
    wait_until(f"Prometheus to load the {expected} alerting rules",
               lambda: len(stack.prometheus_rules()) == expected, TOOL_READY_S, detail=stack.describe)
    # A reload empties the notifier's Alertmanager list until discovery refills it (up to 5s):
    # alerts firing meanwhile are dropped and only resent a minute later. Wait before any can fire.
    wait_until("Prometheus to rediscover Alertmanager after the reload",
               lambda: any(a["url"].startswith(stack.am_url) for a in stack.prometheus_alertmanagers()),
               TOOL_READY_S, detail=stack.describe)


@pytest.fixture(scope="session")
def prometheus_binaries() -> tuple[str, str]:
    """Paths of prometheus and alertmanager (Debian names the latter prometheus-alertmanager)."""
    return require_binary("prometheus"), require_binary("alertmanager", "prometheus-alertmanager")


@pytest.fixture(scope="module")
def stack(prometheus_binaries: tuple[str, str], kafka_bootstrap: str) -> Iterator[Stack]:
    """The running stack, fed two waves of input; stopped and removed afterwards."""
    prometheus_bin, alertmanager_bin = prometheus_binaries
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="auditor-e2e-"))
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    daemon_port, am_port, prom_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    webhook = WebhookReceiver()
    services: list[Service] = []
    try:
        webhook.start()
        KeyRing.generate(workdir / "keys")
        config = _daemon_config(workdir, kafka_bootstrap, prefix, daemon_port)
        daemon = Service("auditor", [sys.executable, "-m", "auditor", "--log-level", "info", "run",
                                     "--config", str(config), "--create-topics", "3"],
                         workdir / "auditor.log", cwd=REPO, env=env)
        services.append(daemon.start())

        (workdir / "am").mkdir()
        shipped_am = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
        am_cfg = alertmanager_test_config(shipped_am, webhook)
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(am_cfg, sort_keys=False))
        alertmanager = Service("alertmanager", [
            alertmanager_bin, f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=", "--log.level=info",
        ], workdir / "alertmanager.log", cwd=workdir)
        services.append(alertmanager.start())

        rules_text, for_changes = shorten_for_durations((DEPLOY / "prometheus" / "rules.yml").read_text())
        (workdir / "rules.yml").write_text("groups: []\n")  # the real rules come after the first scrape
        prom_cfg = prometheus_test_config(
            yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text()),
            rules_file=workdir / "rules.yml", target=f"127.0.0.1:{daemon_port}",
            alertmanager=f"127.0.0.1:{am_port}")
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg, sort_keys=False))
        (workdir / "tsdb").mkdir()
        prometheus = Service("prometheus", [
            prometheus_bin, f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=info",
        ], workdir / "prometheus.log", cwd=workdir)

        s = Stack(workdir=workdir, bootstrap=kafka_bootstrap, events_topic=f"{prefix}-events", daemon=daemon,
                  alertmanager=alertmanager, prometheus=prometheus, webhook=webhook,
                  daemon_target=f"127.0.0.1:{daemon_port}", prom_url=f"http://127.0.0.1:{prom_port}",
                  am_url=f"http://127.0.0.1:{am_port}", for_changes=for_changes)

        # Prometheus starts once the daemon is ready and gets its rules once it has scraped it.
        _wait_http_ok(daemon, f"http://{s.daemon_target}/readyz", DAEMON_READY_S)
        _wait_http_ok(alertmanager, f"{s.am_url}/-/ready", TOOL_READY_S)
        services.append(prometheus.start())
        _wait_http_ok(prometheus, f"{s.prom_url}/-/ready", TOOL_READY_S)
        wait_until("Prometheus to scrape the daemon as ready",
                   lambda: s.query('auditor_ready{job="auditor"} == 1'), SCRAPED_S, detail=s.describe)
        _load_rules(s, rules_text)
        s.timings["stack_up_s"] = time.monotonic() - t0

        # Two identical waves, each scraped before the next: every rate() below has two samples.
        _produce_and_wait_scraped(s, wave("a"))
        _produce_and_wait_scraped(s, wave("b"))
        s.timings["data_in_s"] = time.monotonic() - t0
        yield s
        s.timings["total_s"] = time.monotonic() - t0
        print(f"\n[e2e] {s.webhook.summary()}\n[e2e] rules for: {s.for_changes}; timings: "
              + ", ".join(f"{k} {v:.1f}s" for k, v in s.timings.items()), file=sys.stderr)
    finally:
        for service in reversed(services):
            service.stop()
        webhook.stop()
        if os.environ.get("AUDITOR_E2E_KEEP"):
            print(f"[e2e] kept {workdir} (configs and logs)", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
