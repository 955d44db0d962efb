"""A transaction left open on the audit topic (a hostile producer's, or a crashed one's, until its
transaction timeout) while a chain is taken over.

read_committed readers see nothing past the open transaction's first offset (the last stable
offset) until it ends, so the records the auditor commits after it are hidden, the chain's head
record among them. The chain restore then found no record of the chain and took the head from
its signed checkpoint as if retention had deleted the records (nothing left to compare with the
committed offset), and the read-back of the subject ledger indexed none of the chain's decisions:
a late withdrawal never corrected them, also after the transaction ended. Now the partition stays
paused (reported blocked) while the head record is hidden, and is restored once it is readable.
One partition; the broker is the session's (tests/conftest.py).
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from confluent_kafka import Producer
from daemonkit import (
    InProcessDaemon,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    wait_until,
)
from ledgerkit import T0, ledger_setup, marketing_event, withdrawal

from auditor.stream.produce import produce
from auditor.stream.topics import checkpoint_topic_of
from auditor.trail.record import RecordType

pytestmark = pytest.mark.kafka


#: how long the partition must then stay paused and reported blocked (restore.retry_s 0.5: 16 more tries)
HELD_S = 8.0


def blocked_and_held(d: InProcessDaemon, topic: str, deadline_s: float) -> float:
    """The most ``auditor_partition_blocked`` showed for ``topic``/0 while the daemon kept running, watched
    until it has shown 1 for HELD_S (or ``deadline_s`` has passed): the partition waits, it does not go on."""
    blocked, since = 0.0, None
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and d.thread.is_alive():
        blocked = max(blocked, d.sample("auditor_partition_blocked", {"topic": topic, "partition": "0"}))
        if blocked == 1 and since is None:
            since = time.monotonic()
        if since is not None and time.monotonic() - since >= HELD_S:
            break
        time.sleep(0.5)
    return blocked


def open_transaction(bootstrap: str, topic: str, partition: int) -> Producer:
    """A producer's transaction on ``topic`` with one junk record, left open (for up to two minutes)."""
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"hostile-{uuid.uuid4().hex[:8]}",
                  "transaction.timeout.ms": 120_000})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"not an audit record", partition=partition)
    assert p.flush(30) == 0
    return p


def test_a_takeover_waits_for_a_head_record_an_open_transaction_hides(tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    fast = {"restore.settle_timeout_s": 2, "restore.retry_s": 0.5}
    hostile = open_transaction(kafka_bootstrap, setup.audit, 0)
    try:
        produce(kafka_bootstrap, setup.events, [marketing_event("victim", "u-victim", T0 + timedelta(hours=2))])
        with InProcessDaemon(setup.config(instance_id="a", **fast)) as a:  # its record lands after the open one
            wait_until(lambda: a.sample("auditor_transactions_total", {"outcome": "commit"}) >= 1, 90,
                       "the victim's decision committed")
        produce(kafka_bootstrap, facts, [withdrawal("w-late", "u-victim", T0 + timedelta(hours=1))])
        produce(kafka_bootstrap, setup.events, [marketing_event("next", "u-other", T0)])
        with InProcessDaemon(setup.config(instance_id="b", **fast)) as b:  # another instance: indexed in full
            blocked = blocked_and_held(b, setup.events, 60)
            hostile.abort_transaction(30)  # what the broker does at the transaction timeout
            hostile = None

            def audited() -> set[tuple[str, str]]:
                return {(e.record.event_id, e.record.record_type.value)
                        for e in read_audit(kafka_bootstrap, setup.audit) if e.record.instance_id == "b"}

            wait_until(lambda: ("next", "DECISION") in audited(), 90, "the event after the takeover")
            wait_until(lambda: ("victim", "CORRECTION") in audited(), 20,
                       lambda: f"the late withdrawal's correction of the victim (b wrote {sorted(audited())})")
            assert blocked == 1, "the partition was not reported blocked while its head record was hidden"
    finally:
        if hostile is not None:
            hostile.abort_transaction(30)
    fixes = [e.record for e in read_audit(kafka_bootstrap, setup.audit)
             if e.record.record_type is RecordType.CORRECTION]
    assert [(f.event_id, f.decision.verdict.value if f.decision else None) for f in fixes] == [("victim", "VIOLATION")]


def test_a_restart_waits_for_a_signed_checkpoint_an_open_transaction_hides(tmp_path, kafka_bootstrap):
    """The same on the checkpoint topic: a transaction open there before the chain's first signed
    checkpoint hides it, so the restore found records covered by no checkpoint and the daemon
    stopped with exit 2 (UnsignedChains: the upgrade path, which systemd does not restart). Now
    the partition waits, reported blocked, and goes on once the checkpoint is readable."""
    setup, _ = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    fast = {"restore.settle_timeout_s": 2, "restore.retry_s": 0.5}
    hostile = open_transaction(kafka_bootstrap, checkpoint_topic_of(setup.audit), 0)
    try:
        produce(kafka_bootstrap, setup.events, [marketing_event("first", "u-1", T0)])
        with InProcessDaemon(setup.config(instance_id="a", **fast)) as a:  # its checkpoint lands after the open one
            wait_until(lambda: a.sample("auditor_transactions_total", {"outcome": "commit"}) >= 1, 90,
                       "the first decision committed")
        produce(kafka_bootstrap, setup.events, [marketing_event("second", "u-2", T0)])
        with InProcessDaemon(setup.config(instance_id="a", **fast)) as a:  # a restart
            blocked = blocked_and_held(a, setup.events, 60)
            assert a.thread.is_alive(), f"the daemon stopped with exit code {a.exit_code}"
            hostile.abort_transaction(30)
            hostile = None
            wait_until(lambda: any(e.record.event_id == "second" for e in read_audit(kafka_bootstrap, setup.audit)),
                       60, "the second event audited once the checkpoint is readable")
            assert blocked == 1
    finally:
        if hostile is not None:
            hostile.abort_transaction(30)
    assert [e.record.seq for e in read_audit(kafka_bootstrap, setup.audit)] == [0, 1]
