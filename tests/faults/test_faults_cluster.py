"""Three KRaft brokers (``three_brokers``, every topic replicated three times): the leader of the
audit partitions killed and restarted, the transaction and group coordinator killed and
restarted; and the daemon scaled 1 -> 3 -> 1 while events flow (on the shared broker).
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import daemonkit
import pytest
from daemonkit import Feeder, PacedFeeder, Setup, make_setup, wait_until
from faultkit import (
    Expect,
    Supervisor,
    assert_trail_intact,
    committed_count,
    count_audit,
    drain_and_stop,
    endless,
    wait_audited,
)

from auditor.localkafka.cluster import LocalKafkaCluster

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

RECOVERY_S = 150


def replicated_setup(work: Path, cluster: LocalKafkaCluster, partitions: int = 3) -> Setup:
    """daemonkit's setup with every topic replicated on all nodes."""
    plain = daemonkit.create_topics
    daemonkit.create_topics = functools.partial(plain, replication_factor=cluster.size)  # type: ignore[assignment]
    try:
        return make_setup(work, cluster.bootstrap_servers, partitions=partitions, trail=True, batch_max_events=200)
    finally:
        daemonkit.create_topics = plain  # type: ignore[assignment]


def _kill_and_restart(three_brokers: LocalKafkaCluster, tmp_path: Path, seed: int, victim_of) -> None:  # type: ignore[no-untyped-def]
    setup = replicated_setup(tmp_path, three_brokers)
    feed = PacedFeeder(Feeder(setup.bootstrap, setup.events), iter(endless(seed)), rate=200)
    sup = Supervisor(setup, "cluster-fault")
    killed = None
    try:
        sup.current.wait_ready(90)
        feed.start()
        wait_audited(setup, 600, 90, "before the kill", describe=sup.describe)
        killed = victim_of(setup)
        three_brokers.node(killed).kill()
        before = committed_count(setup.bootstrap, setup.audit)
        wait_audited(setup, before + 400, RECOVERY_S, f"with node {killed} down", describe=sup.describe)
        three_brokers.node(killed).restart()
        killed = None
        before = committed_count(setup.bootstrap, setup.audit)
        wait_audited(setup, before + 300, RECOVERY_S, "after the node came back", describe=sup.describe)
        assert feed.flowing
        sent = drain_and_stop(setup, feed, sup, RECOVERY_S)
        sup.assert_exits_documented()
    finally:
        feed.halt.set()
        sup.kill_all()
        if killed is not None:
            three_brokers.node(killed).restart()
    assert sup.trail_dir is not None
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[sup.trail_dir])


def test_leader_of_the_audit_partitions_killed_and_restarted(three_brokers, tmp_path):
    def victim(setup: Setup) -> int:
        leaders = Counter(three_brokers.leader_of(setup.audit, p) for p in range(3))
        return leaders.most_common(1)[0][0]

    _kill_and_restart(three_brokers, tmp_path, 51, victim)


def test_transaction_and_group_coordinator_killed_and_restarted(three_brokers, tmp_path):
    def victim(setup: Setup) -> int:  # one partition each: its leader is the coordinator
        return three_brokers.leader_of("__transaction_state", 0)

    _kill_and_restart(three_brokers, tmp_path, 52, victim)


def test_scale_one_to_three_to_one_while_events_flow(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=6, trail=True, batch_max_events=200)
    feed = PacedFeeder(Feeder(kafka_bootstrap, setup.events), iter(endless(53)), rate=250)
    fleet = [Supervisor(setup, "scale-a")]
    try:
        fleet[0].current.wait_ready(90)
        feed.start()
        wait_audited(setup, 500, 90, "from instance a alone", describe=fleet[0].describe)
        fleet += [Supervisor(setup, "scale-b"), Supervisor(setup, "scale-c")]
        for s in fleet[1:]:
            s.current.wait_ready(90)

        def writers() -> set[str]:
            return {r.record["instance_id"] for r in count_audit(setup.bootstrap, setup.audit).rows}

        wait_until(lambda: writers() >= {"scale-b", "scale-c"}, 90, "instances b and c to audit events")
        for s in fleet[1:]:
            assert s.stop(within=40) == 0, s.describe()
        before = committed_count(setup.bootstrap, setup.audit)
        wait_audited(setup, before + 500, 90, "with instance a alone again", describe=fleet[0].describe)
        assert feed.flowing
        sent = drain_and_stop(setup, feed, fleet[0], 120)
        for s in fleet:
            s.assert_exits_documented()
    finally:
        feed.halt.set()
        for s in fleet:
            s.kill_all()
    got = assert_trail_intact(setup, Expect(sent, setup.events),
                              file_copies=[s.trail_dir for s in fleet if s.trail_dir is not None])
    assert {r.record["instance_id"] for r in got.rows} == {"scale-a", "scale-b", "scale-c"}
