"""The subject ledger's real-broker tests' shared setup: a daemon with the ledger on, ipasar's
marketing event for a subject, a marketing-consent withdrawal, a daemon run until it audited so many
events, and what the audit topic holds per event."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from daemonkit import InProcessDaemon, Setup, make_setup, read_audit, wait_until

from auditor.config import Config
from auditor.errors import ConfigError
from auditor.events.codec import event_from_mapping
from auditor.events.model import Event
from auditor.ledger.model import FactType, Scope, SubjectFact
from auditor.localkafka.broker import create_topics

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = datetime(2026, 2, 24, 18, 0, tzinfo=UTC)
MARKETING = Scope("marketing")


def ledger_setup(work: Path, bootstrap: str, *, partitions: int = 3, facts_partitions: int | None = None,
                 **extra: Any) -> tuple[Setup, str]:
    setup = make_setup(work, bootstrap, partitions=partitions, trail=False)
    facts = f"facts-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [facts], facts_partitions or partitions)
    doc = yaml.safe_load(setup.config_path.read_text())
    doc["topics"]["facts"] = facts
    doc["ledger"] = {"dir": str(work / "ledger"), **extra}
    setup.config_path.write_text(yaml.safe_dump(doc))
    return setup, facts


def marketing_event(event_id: str, subject: str, at: datetime) -> Event:
    """ipasar's marketing send on claimed consent (the pack reads marketing consent; no recipient)."""
    line = next(raw for raw in (DATA / "events" / "ipasar.jsonl").read_text().splitlines()
                if '"event_id":"ipasar-mkt-consent"' in raw.replace(" ", ""))
    e = event_from_mapping(json.loads(line))
    return replace(e, event_id=event_id, occurred_at=at, subject=replace(e.subject, id=subject))


def consent(fact_id: str, subject: str, ftype: FactType, at: datetime,
            scope: Scope | None = MARKETING) -> SubjectFact:
    """A consent fact from the consent platform, recorded 3 s after it took effect."""
    return SubjectFact(fact_id, subject, ftype, at, at + timedelta(seconds=3), "consent-platform", scope)


def withdrawal(fact_id: str, subject: str, at: datetime) -> SubjectFact:
    return consent(fact_id, subject, FactType.CONSENT_WITHDRAWN, at)


def raising_daemon(cfg: Config) -> tuple[InProcessDaemon, list[BaseException]]:
    """An in-process daemon whose run() keeps what it raises (the list returned) instead of leaving it to
    the thread's excepthook."""
    d = InProcessDaemon(cfg)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            d.daemon.run()
        except BaseException as exc:  # noqa: BLE001 - what the test looks at
            raised.append(exc)

    d.thread = threading.Thread(target=run, name="auditor-daemon", daemon=True)
    return d, raised


def stops_before_auditing(setup: Setup, bootstrap: str, instance_id: str = "a") -> ConfigError:
    """Start a daemon that must stop (exit 2) before it audits anything: wait until it stopped or
    the audit topic holds a record; no record, and what it raised is a ConfigError (returned)."""
    d, raised = raising_daemon(setup.config(instance_id=instance_id))
    with d:
        wait_until(lambda: not d.thread.is_alive() or read_audit(bootstrap, setup.audit), 90,
                   "the daemon stopped, or the event audited")
    records = [(e.record.event_id, e.record.record_type.value, e.record.decision.verdict.value if e.record.decision
                else None) for e in read_audit(bootstrap, setup.audit)]
    assert records == [], records
    assert raised and isinstance(raised[0], ConfigError), raised
    return raised[0]


@contextmanager
def audited(setup: Setup, bootstrap: str, records: int, instance_id: str = "one") -> Iterator[InProcessDaemon]:
    """An in-process daemon, entered once the audit topic holds ``records`` records (90 s at most)."""
    with InProcessDaemon(setup.config(instance_id=instance_id)) as d:
        wait_until(lambda: len(read_audit(bootstrap, setup.audit)) >= records, 90, f"{records} audit record(s)")
        yield d


def records_by_event(bootstrap: str, audit: str) -> dict[str, list[tuple[str, str]]]:
    """event id -> [(record type, verdict)] of its records in the audit topic, in the topic's order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for e in read_audit(bootstrap, audit):
        r = e.record
        assert r.event_id is not None and r.decision is not None
        out.setdefault(r.event_id, []).append((r.record_type.value, r.decision.verdict.value))
    return out
