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
from daemonkit import (
    Feeder,
    Fleet,
    PacedFeeder,
    TopicTail,
    assert_exactly_once,
    make_setup,
    mixed_events,
    read_audit,
    wait_until,
)

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
