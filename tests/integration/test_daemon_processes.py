"""The daemon as operators run it (``python -m auditor run`` subprocesses) on a real broker:
graceful shutdown, SIGKILL and restart, and scale-out to two instances while events flow.

Events keep flowing from a paced feeder thread through every stop, start and rebalance, so
each transition happens mid-stream; every wait is bounded and says what it was waiting for.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from daemonkit import (
    Feeder,
    Fleet,
    PacedFeeder,
    TopicTail,
    assert_exactly_once,
    chains_of,
    fault_suite_only,
    make_setup,
    mixed_events,
    read_audit,
    wait_until,
)

from auditor.stream.topictrail import verify_topic
from auditor.trail.keys import KeyRing
from auditor.trail.verify import verify_trail

pytestmark = pytest.mark.kafka


def endless(seed: int):  # type: ignore[no-untyped-def]
    """The mixed stream, never exhausted (the feeder is stopped by the test)."""
    return itertools.cycle(mixed_events(5000, seed=seed))


def test_sigterm_drains_and_exits_zero_while_serving_readyz_and_metrics(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=False)
    feeder = Feeder(kafka_bootstrap, setup.events)
    with Fleet(setup) as fleet, TopicTail(kafka_bootstrap, setup.audit) as tail:
        d = fleet.start("graceful-1")
        d.wait_ready(60)
        assert d.get("/readyz") == (200, "ready\n")
        assert d.get("/healthz")[0] == 200
        feed = PacedFeeder(feeder, endless(21), rate=400)
        feed.start()
        tail.wait_for(600, 60, "before SIGTERM")
        audited = d.metric("auditor_events_audited_total")
        assert audited > 0, "/metrics does not count audited events"
        assert feed.flowing
        assert d.terminate(within=15) == 0, d.describe()
        sent = feed.finish()
    assert d.get_refused(), "the HTTP server outlived the process"
    entries = read_audit(kafka_bootstrap, setup.audit)
    # a clean drain: what was audited is exactly a per-partition prefix of what was sent
    done = {(e.record.source.partition, e.record.source.offset) for e in entries}
    prefix = [s for s in sent if (s.partition, s.offset) in done]
    for p in {s.partition for s in sent}:
        offsets = sorted(s.offset for s in sent if s.partition == p)
        got = sorted(o for q, o in done if q == p)
        assert got == offsets[:len(got)], f"partition {p}: audited offsets are not a prefix of the sent ones"
    assert_exactly_once(entries, prefix, setup.events)
    assert len(entries) >= 600


# With the full fault suite only: tests/faults/test_faults_txn.py's SIGKILL after send_offsets (in every
# run) kills the same daemon at the riskiest step of its transaction instead of at a random point, and
# checks more (the independent reader, the console consumer, each file copy byte for byte).
@pytest.mark.faults
@fault_suite_only
def test_sigkill_and_restart_with_the_same_instance_id_loses_and_duplicates_nothing(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=True)
    feeder = Feeder(kafka_bootstrap, setup.events)
    with Fleet(setup) as fleet, TopicTail(kafka_bootstrap, setup.audit) as tail:
        first = fleet.start("crash-1")
        first.wait_ready(60)
        feed = PacedFeeder(feeder, endless(22), rate=300)
        feed.start()
        tail.wait_for(900, 60, "before SIGKILL")
        assert feed.flowing
        first.kill()  # SIGKILL: mid-stream, most likely mid-transaction
        assert first.proc.returncode == -9
        again = fleet.start("crash-1")
        again.wait_ready(60)  # after the dead member's session times out
        before = len(tail.messages)
        tail.wait_for(before + 600, 60, "after the restart")
        assert feed.flowing, "the feeder stopped before the restarted daemon caught up"
        sent = feed.finish()
        tail.wait_for(len(sent), 60, "to catch up after the feeder stopped")
        assert again.terminate(within=15) == 0, again.describe()
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(entries, sent, setup.events)
    chains = {c: len(r) for c, r in chains_of(entries).items()}
    topic = verify_topic({"bootstrap.servers": kafka_bootstrap}, setup.audit)
    assert topic.ok, [str(i) for i in topic.issues[:5]]
    assert topic.chains == chains and sum(topic.chains.values()) == len(sent)
    assert setup.trail_dir is not None
    files = verify_trail(setup.trail_dir, KeyRing.load(setup.keys_dir).verifier)
    assert files.ok, [str(i) for i in files.issues[:5]]
    assert files.chains == chains, "the file copy does not mirror the audit topic"


def test_second_instance_joins_and_first_leaves_while_events_flow(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=6, trail=False)
    feeder = Feeder(kafka_bootstrap, setup.events)
    with Fleet(setup) as fleet, TopicTail(kafka_bootstrap, setup.audit) as tail:
        a = fleet.start("scale-a")
        a.wait_ready(60)
        feed = PacedFeeder(feeder, endless(23), rate=250)
        feed.start()
        tail.wait_for(300, 60, "from instance a alone")
        b = fleet.start("scale-b")
        b.wait_ready(60)
        wait_until(lambda: b.metric("auditor_events_audited_total") > 0, 60, "instance b to audit events")
        assert feed.flowing, "events stopped flowing before instance a was stopped"
        assert a.terminate(within=15) == 0, a.describe()
        before = len(tail.messages)
        tail.wait_for(before + 500, 60, "with instance b alone")
        assert feed.flowing, "events stopped flowing before instance b took over"
        sent = feed.finish()
        tail.wait_for(len(sent), 60, "to catch up after the feeder stopped")
        assert b.terminate(within=15) == 0, b.describe()
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(entries, sent, setup.events)
    report = verify_topic({"bootstrap.servers": kafka_bootstrap}, setup.audit)
    assert report.ok, [str(i) for i in report.issues[:5]]
    assert len(report.chains) == 6 and sum(report.chains.values()) == len(sent)
    writers = Counter(e.record.instance_id for e in entries)
    assert set(writers) == {"scale-a", "scale-b"}, writers
    handed_over = [c for c, records in chains_of(entries).items()
                   if {r.instance_id for r in records} == {"scale-a", "scale-b"}]
    assert handed_over, "no chain was continued by the second instance"
