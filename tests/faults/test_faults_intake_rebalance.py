"""Attack on the daemon's intake (auditor.stream.intake.Intake, per-partition queues, pause at 8 batches)
from outside: rebalances and a SIGKILL while the queues hold a backlog and some partitions are paused.

A backlog on 6 partitions, batches of 20 (a partition is paused at 160 buffered, 640 in all; small
transactions keep the backlog long enough for the rebalances), and
events still arriving: instance a audits; b joins (cooperative: a's queues of the partitions moving
to b are dropped, the others kept); b is SIGKILLed mid-backlog and restarted with the same instance
id by its supervisor; then b stops (SIGTERM) and its partitions, buffered by b, come back to a
(revoke -> assign on b, assign on a of partitions a once held paused). The independent checker then
recounts the audit topic read_committed: every input exactly once, chains intact."""

from __future__ import annotations

import daemonkit
import pytest
from daemonkit import Feeder, PacedFeeder, make_setup, wait_until
from faultkit import Expect, Supervisor, assert_trail_intact, committed_count, count_audit, endless, wait_audited

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

BACKLOG = 100_000


def test_rebalances_and_a_sigkill_while_the_intake_holds_a_backlog_lose_and_double_nothing(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=6, trail=True, batch_max_events=20)
    backlog = Feeder(kafka_bootstrap, setup.events)
    backlog.send_all(daemonkit.mixed_events(BACKLOG, seed=71))
    feed = PacedFeeder(Feeder(kafka_bootstrap, setup.events), iter(endless(72)), rate=150)
    a = Supervisor(setup, "intake-a")
    fleet = [a]
    try:
        a.current.wait_ready(90)
        feed.start()
        wait_audited(setup, 2_000, 120, "from instance a alone", describe=a.describe)
        b = Supervisor(setup, "intake-b")
        fleet.append(b)
        b.current.wait_ready(90)

        def writers() -> set[str]:
            return {r.record["instance_id"] for r in count_audit(setup.bootstrap, setup.audit).rows}

        wait_until(lambda: "intake-b" in writers(), 120, "instance b to audit events")
        before = committed_count(setup.bootstrap, setup.audit)
        assert before < BACKLOG, "the backlog was audited before b was killed: raise BACKLOG"
        killed = b.current
        killed.kill()  # SIGKILL with its queues full; the supervisor restarts it (same instance id)
        wait_until(lambda: b.current is not killed, 30, "b restarted")
        b.current.wait_ready(120)
        wait_audited(setup, before + 3_000, 180, "after b's restart", describe=b.describe)
        assert b.stop(within=40) == 0, b.describe()  # its partitions (and what it buffered) go back to a
        before = committed_count(setup.bootstrap, setup.audit)
        wait_audited(setup, before + 1_000, 120, "with a alone again", describe=a.describe)
        assert feed.flowing
        sent = feed.finish(timeout=120)
        total = len(backlog.sent) + len(sent)
        wait_audited(setup, total, 600, "after the feeder stopped", describe=a.describe)
        assert a.stop(within=40) == 0, a.describe()
        b.exits.remove(-9)  # the SIGKILL of this test (any other exit must be a documented one)
        for s in fleet:
            s.assert_exits_documented()
    finally:
        feed.halt.set()
        for s in fleet:
            s.kill_all()
    got = assert_trail_intact(setup, Expect(backlog.sent + sent, setup.events),
                              file_copies=[s.trail_dir for s in fleet if s.trail_dir is not None])
    assert {r.record["instance_id"] for r in got.rows} == {"intake-a", "intake-b"}
