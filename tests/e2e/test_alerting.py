"""End to end: violations and dead letters in Kafka become the right alerts at the right receivers,
every dashboard query has data, and a stopped daemon pages.

The stack (tests/e2e/conftest.py) runs the daemon against the session's Kafka broker, scraped
by a real Prometheus with the shipped rules (``for:`` divided by 60, see promkit) that alerts a
real Alertmanager with the shipped routes, whose receivers post to a webhook in this process.
The tests run in file order on one stack; the last one stops the daemon.
"""

from __future__ import annotations

import importlib.util
import math
import signal
import time
from pathlib import Path
from types import ModuleType

import pytest
from promkit import Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboard.py"

#: Bound for an alert to reach the webhook once its cause is scraped: rule evaluation (1s), the
#: shortened ``for``, Prometheus's notification queue and Alertmanager's group_wait (1s).
ARRIVAL_S = 30
#: Bound for SIGTERM to end the daemon (its shutdown_timeout_s is 20).
STOP_S = 30

CRITICAL = {"alertname": "AuditorCriticalViolation", "severity": "critical", "pack": "inper",
            "rule": "inper.disclose.legal-process", "recipient_type": "law_enforcement",
            "purpose": "legal_compliance"}
AUTHORITY = {"alertname": "AuditorAuthorityDisclosureViolation", "severity": "critical", "pack": "inper",
             "rule": "inper.undeclared-purpose", "recipient_type": "law_enforcement", "purpose": "undeclared"}
#: The ordinary ticket for the same violation, inhibited by AUTHORITY (alertmanager.yml).
AUTHORITY_TICKET = {**AUTHORITY, "alertname": "AuditorPolicyViolation", "severity": "high"}
HIGH = {"alertname": "AuditorPolicyViolation", "severity": "high", "pack": "inper",
        "rule": "inper.use.marketing-unless-opted-out", "recipient_type": "none", "purpose": "marketing"}
DEAD_LETTERS = [{"alertname": "AuditorDeadLetters", "severity": "warning", "reason": reason}
                for reason in ("undecodable", "unknown_schema")]
NO_INSTANCE_READY = {"alertname": "AuditorNoInstanceReady", "severity": "critical"}

#: What a healthy daemon fed this test's input may raise: nothing else.
EXPECTED_WHILE_UP = {"AuditorCriticalViolation", "AuditorAuthorityDisclosureViolation",
                     "AuditorPolicyViolation", "AuditorDeadLetters"}


def test_critical_violation_pages_and_is_ticketed(stack: Stack) -> None:
    wait_for_alert(stack, CRITICAL, "pager")
    wait_for_alert(stack, CRITICAL, "ticket")


def test_high_violation_opens_a_ticket(stack: Stack) -> None:
    # That it does not page is checked once everything had time to arrive (test_only_critical_pages).
    wait_for_alert(stack, HIGH, "ticket")


def test_disclosure_to_authorities_pages_even_for_a_non_critical_rule(stack: Stack) -> None:
    wait_for_alert(stack, AUTHORITY, "pager")
    # The ordinary ticket for the same violation reaches Alertmanager, which inhibits it.
    wait_for_suppressed(stack, AUTHORITY_TICKET, "inhibited by AuditorAuthorityDisclosureViolation")
    assert not stack.webhook.find(AUTHORITY_TICKET), stack.webhook.summary()


def test_dead_letters_open_a_ticket_per_reason(stack: Stack) -> None:
    for labels in DEAD_LETTERS:
        wait_for_alert(stack, labels, "ticket")


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = load_dashboard().all_queries()
    assert queries
    empty, nan_only = [], []
    for expr in queries:
        result = stack.query(expr)
        if not result:
            empty.append(expr)
        elif all(math.isnan(float(r["value"][1])) for r in result):
            nan_only.append(expr)
    assert not empty and not nan_only, (
        f"of {len(queries)} dashboard queries, after {stack.produced} events, these return no data: "
        f"{empty}\nand these only NaN: {nan_only}")


def test_no_other_alert_fires_while_the_daemon_is_healthy(stack: Stack) -> None:
    # Runs after the tests above have waited for their alerts: the stack has been up for a while.
    fired = {r.labels["alertname"] for r in stack.webhook.received() if r.status == "firing"}
    assert fired <= EXPECTED_WHILE_UP, (
        f"unexpected alerts {sorted(fired - EXPECTED_WHILE_UP)}\n{stack.webhook.summary()}\n"
        + "\n".join(stack.history(s) for s in ('up{job="auditor"}', 'auditor_ready{job="auditor"}',
                                               'scrape_duration_seconds{job="auditor"}')))


def test_only_critical_pages(stack: Stack) -> None:
    pages = stack.webhook.find({}, receiver="pager")
    assert pages, stack.webhook.summary()
    assert all(r.labels.get("severity") == "critical" for r in pages), stack.webhook.summary()
    assert not stack.webhook.find(HIGH, receiver="pager"), stack.webhook.summary()


def test_stopped_daemon_exits_cleanly_and_pages(stack: Stack) -> None:
    stopped_at = time.time()
    stack.daemon.signal(signal.SIGTERM)
    code = stack.daemon.wait(STOP_S)
    assert code == 0, f"auditor exited {code} on SIGTERM\n{stack.daemon.log_tail()}"

    # up == 0: AuditorInstanceDown fires in Prometheus for this instance ...
    instance_down = {"alertname": "AuditorInstanceDown", "severity": "warning", "job": "auditor",
                     "instance": stack.daemon_target}
    wait_until("AuditorInstanceDown to fire in Prometheus",
               lambda: [a for a in stack.prometheus_alerts()
                        if matches(a["labels"], instance_down) and a["state"] == "firing"],
               ARRIVAL_S, detail=stack.describe)
    # ... the only instance being gone, the outage pages as AuditorNoInstanceReady ...
    wait_for_alert(stack, NO_INSTANCE_READY, "pager", since=stopped_at)
    wait_for_alert(stack, NO_INSTANCE_READY, "ticket", since=stopped_at)
    # ... which inhibits the per-instance ticket (one outage, one notification).
    wait_for_suppressed(stack, instance_down, "inhibited by AuditorNoInstanceReady")
    assert not stack.webhook.find({"alertname": "AuditorInstanceDown"}), stack.webhook.summary()


# --------------------------------------------------------------------------- helpers


def matches(labels: dict[str, str], expected: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in expected.items())


def wait_for_alert(stack: Stack, labels: dict[str, str], receiver: str, since: float = 0.0) -> None:
    wait_until(f"firing {labels} at receiver {receiver!r}",
               lambda: stack.webhook.find(labels, receiver=receiver, since=since), ARRIVAL_S,
               detail=stack.describe)


def wait_for_suppressed(stack: Stack, labels: dict[str, str], why: str) -> None:
    """Alertmanager holds the alert and does not notify it."""
    wait_until(f"Alertmanager to hold {labels} suppressed ({why})",
               lambda: [a for a in stack.alertmanager_alerts() if matches(a["labels"], labels)
                        and a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"]],
               ARRIVAL_S, detail=lambda: f"{stack.alertmanager_summary()}\n{stack.describe()}")


def load_dashboard() -> ModuleType:
    """deploy/grafana/dashboard.py, a script rather than a package, imported by path."""
    spec = importlib.util.spec_from_file_location("_e2e_dashboard", DASHBOARD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
