"""Zombie-safe ownership on a real broker: a daemon frozen between send_offsets_to_transaction and
commit_transaction (past the session timeout, within the transaction timeout) while another
instance takes its partitions must not fork a chain.

Instance A freezes itself with the test hook (``after_send_offsets:stop``) while its transaction
holds records and offsets. Instance B joins, is given A's partitions once A's session times out,
and must not restore a chain head before A's transaction is finished. A is then woken (SIGCONT),
commits, and dies at once (``after_commit:kill``) so it cannot rejoin and take partitions back.
Every input must end up audited exactly once, every chain contiguous, and the audit topic must
verify. On the code before the fix B restored the heads at once and forked the chains.
"""

from __future__ import annotations

import itertools
import signal

import pytest
from confluent_kafka import Consumer, TopicPartition
from daemonkit import (
    Feeder,
    Fleet,
    InProcessDaemon,
    PacedFeeder,
    TopicTail,
    assert_exactly_once,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    make_setup,
    mixed_events,
    read_audit,
    wait_until,
)
from structlog.testing import capture_logs

from auditor.events.model import Event
from auditor.stream.topictrail import verify_topic

pytestmark = pytest.mark.kafka


def test_a_zombie_frozen_before_its_commit_does_not_fork_the_chain_of_its_successor(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False, batch_max_events=50)
    hook_dir = tmp_path / "hook-a"
    feeder = Feeder(kafka_bootstrap, setup.events)
    with Fleet(setup) as fleet, TopicTail(kafka_bootstrap, setup.audit) as tail:
        a = fleet.start("zombie-a", env={"AUDITOR_TEST_HOOK": "after_send_offsets:stop:8,after_commit:kill:8",
                                         "AUDITOR_TEST_HOOK_DIR": str(hook_dir)})
        a.wait_ready(60)
        feed = PacedFeeder(feeder, itertools.cycle(mixed_events(3000, seed=31)), rate=150)
        feed.start()
        wait_until(lambda: (hook_dir / "after_send_offsets.reached").exists(), 60,
                   lambda: f"instance a to freeze in its 8th transaction: {a.describe()}")
        b = fleet.start("zombie-b")

        def b_decided() -> bool:  # restored both chains (trusting the head) or held them back
            assert b.proc.poll() is None, b.describe()
            return (len(b.events("chain restored")) >= 2
                    or bool(b.events("partition paused: its chain head cannot be trusted yet; retrying")))

        wait_until(b_decided, 90, lambda: f"instance b to take over the partitions: {b.describe()}")
        a.proc.send_signal(signal.SIGCONT)  # the zombie wakes within its transaction timeout and commits
        assert a.proc.wait(30) == -signal.SIGKILL, a.describe()
        assert (hook_dir / "after_commit.reached").exists(), "the zombie did not commit its transaction"
        wait_until(lambda: len(b.events("chain restored")) >= 2, 120,
                   lambda: f"instance b to restore both chains: {b.describe()}")
        before = len(tail.messages)
        tail.wait_for(before + 300, 90, "after the zombie woke")
        sent = feed.finish()
        tail.wait_for(len(sent), 90, "to catch up after the feeder stopped")
        assert b.terminate(within=30) == 0, b.describe()
    paused = b.events("partition paused: its chain head cannot be trusted yet; retrying")
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(entries, sent, setup.events)
    report = verify_topic({"bootstrap.servers": kafka_bootstrap}, setup.audit)
    assert report.ok, [str(i) for i in report.issues[:5]]
    assert paused, "instance b never held a partition back while the zombie's transaction was open"


def test_a_partition_whose_head_disagrees_is_paused_and_reported_while_the_others_go_on(kafka_bootstrap, tmp_path):
    """The group's offset for partition 1 was moved by hand past a chain that has no records: the
    head cannot be trusted, so partition 1 stays paused and reported (metric, log), readiness fails
    after watchdog.progress_timeout_s, and partition 0 is audited all the same."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False)
    events = [e for e in mixed_events(200, seed=33) if isinstance(e, Event)][:40]
    feeder = Feeder(kafka_bootstrap, setup.events)
    for i, e in enumerate(events):
        feeder.send(e, partition=i % 2)
    feeder.flush()
    mover = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": setup.group, "enable.auto.commit": False})
    mover.commit(offsets=[TopicPartition(setup.events, 1, 5)], asynchronous=False)
    mover.close()
    cfg = setup.config(**{"watchdog.progress_timeout_s": 3, "restore.retry_s": 0.5})
    with capture_logs() as logs, TopicTail(kafka_bootstrap, setup.audit) as tail, InProcessDaemon(cfg) as daemon:
        tail.wait_for(20, 60, "(partition 0 audited although partition 1 is held back)")
        wait_until(lambda: not daemon.daemon.ready(), 30, "readiness to fail for the stalled partition")
        labels = {"topic": setup.events, "partition": "1"}
        wait_until(lambda: daemon.sample("auditor_partition_stalled", labels) == 1, 10, "the stalled gauge")
        assert daemon.sample("auditor_partition_blocked", labels) == 1
        assert daemon.sample("auditor_partition_stalled", {"topic": setup.events, "partition": "0"}) == 0
        assert daemon.daemon.healthy and daemon.exit_code is None, "one partition must never stop the daemon"
        tail.poll(1.0)
    assert {m.partition for m in tail.messages} == {0}
    paused = [e for e in logs if e["event"].startswith("partition paused")]
    assert paused and "committed offset 5" in paused[0]["reason"]


def test_an_instance_whose_every_partition_stays_paused_is_ended_by_the_watchdog(kafka_bootstrap, tmp_path):
    """Every partition this instance owns has a head that cannot be trusted (the group's offsets were
    moved by hand past chains with no records), so the loop has nothing it can audit: that is no
    progress, and the watchdog ends the process (exit 4) after watchdog.stall_timeout_s so that a
    restart starts its clients afresh. (Before: an idle loop beat the watchdog, so an instance
    whose restore failed for good stayed up, audited nothing and never exited.)"""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False)
    feeder = Feeder(kafka_bootstrap, setup.events)
    for i, e in enumerate([e for e in mixed_events(100, seed=34) if isinstance(e, Event)][:20]):
        feeder.send(e, partition=i % 2)
    feeder.flush()
    mover = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": setup.group, "enable.auto.commit": False})
    mover.commit(offsets=[TopicPartition(setup.events, 0, 3), TopicPartition(setup.events, 1, 3)], asynchronous=False)
    mover.close()
    cfg = setup.config(**{"watchdog.stall_timeout_s": 6, "restore.retry_s": 0.5})
    with capture_logs() as logs, InProcessDaemon(cfg) as daemon:
        wait_until(lambda: daemon.watchdog_exit is not None, 60,
                   lambda: f"the watchdog to end an instance that can audit nothing (blocked: "
                           f"{daemon.sample('auditor_partition_blocked', {'topic': setup.events, 'partition': '0'})})")
        assert daemon.watchdog_exit == 4
        assert not daemon.daemon.healthy
    (fired,) = [e for e in logs if e["event"] == "watchdog: exiting so that the process is restarted"]
    assert "no progress" in fired["reason"]
