"""An event or a fact on another partition than its subject id hashes to (attd).

The ledger keeps a subject's facts in the partition its id hashes to (Kafka's murmur2, as Java
clients and ``auditor produce`` partition) and judges an event with the facts of the partition the
event arrived on. The producing system chooses that partition: an event sent unkeyed, or keyed
otherwise, or to an explicit partition, found none of its subject's facts, so its own consent
claim stood against a recorded withdrawal. Such an event is now dead-lettered (``misrouted``),
and a fact on the wrong partition is refused and counted, instead of never meeting an event.
Real broker (the session's, tests/conftest.py), two partitions.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from confluent_kafka import Producer
from daemonkit import (
    InProcessDaemon,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    read_topic,
    wait_until,
)
from ledgerkit import T0, ledger_setup, marketing_event, withdrawal

from auditor.ledger.codec import encode_fact_single_object
from auditor.ledger.partitioning import subject_partition
from auditor.localkafka.broker import create_topics
from auditor.stream.produce import encode, produce

pytestmark = pytest.mark.kafka


def send(bootstrap: str, topic: str, value: bytes, partition: int, key: bytes | None = None) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, value, key=key, partition=partition)
    assert p.flush(30) == 0


def test_subject_partition_is_the_partition_librdkafkas_murmur2_partitioner_chooses(kafka_bootstrap):
    topic = f"murmur-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], 7)
    keys = [f"u-{i}" for i in range(200)] + ["é", "中文", "a", "ab", "abc", "abcd", "abcde", "x" * 1024]
    got: dict[str, int] = {}
    p = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    for k in keys:
        p.produce(topic, b"v", key=k.encode(), on_delivery=lambda err, msg, k=k: got.__setitem__(k, msg.partition()))
    assert p.flush(30) == 0
    assert {k: subject_partition(k, 7) for k in keys} == got


def test_an_event_sent_to_another_partition_than_its_subjects_is_dead_lettered(tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=2)
    home = subject_partition("u-victim", 2)
    produce(kafka_bootstrap, facts, [withdrawal("w", "u-victim", T0)])  # keyed: the subject's partition
    # the audited system sends its marketing event, claiming consent, unkeyed to the other partition
    send(kafka_bootstrap, setup.events, encode(marketing_event("away", "u-victim", T0 + timedelta(hours=1))), 1 - home)
    send(kafka_bootstrap, setup.events, encode(marketing_event("home", "u-victim", T0 + timedelta(hours=1))), home,
         key=b"u-victim")
    # and a fact for another subject, on the wrong partition: it would never meet that subject's events
    elsewhere = 1 - subject_partition("u-other", 2)
    send(kafka_bootstrap, facts, encode_fact_single_object(withdrawal("w-away", "u-other", T0)), elsewhere)
    with InProcessDaemon(setup.config(instance_id="a")) as d:
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) == 2, 90, "both events' records")
        wait_until(lambda: d.sample("auditor_ledger_facts_rejected_total", {"reason": "misrouted"}) == 1, 30,
                   "the misrouted fact refused and counted")
    by_partition = {e.record.source.partition: e.record for e in read_audit(kafka_bootstrap, setup.audit)}
    at_home, away = by_partition[home], by_partition[1 - home]
    assert at_home.decision is not None and at_home.decision.verdict.value == "VIOLATION"  # the withdrawal met
    # before: a DECISION, ALLOW on the event's own consent claim (no fact found on its partition)
    assert (away.record_type.value, away.rejection.reason if away.rejection else None) == ("REJECTION", "misrouted")
    assert len(read_topic(kafka_bootstrap, setup.dead_letter)) == 1
