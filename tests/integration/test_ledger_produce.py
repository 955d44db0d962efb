"""``auditor produce --facts`` on a real broker: facts keyed by subject id land in the partition
Java's partitioner (murmur2) picks, the same partition as the subject's events."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from auditor.cli import main

pytestmark = pytest.mark.kafka
DATA = Path(__file__).resolve().parents[1] / "data"


def java_partition(key: bytes, partitions: int) -> int:
    """org.apache.kafka.common.utils.Utils.murmur2, toPositive, modulo: Java's default partitioner."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(key)) & 0xFFFFFFFF
    n4 = len(key) // 4
    for i in range(n4):
        k = int.from_bytes(key[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = key[4 * n4:]
    if len(rest) == 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if len(rest) >= 1:
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_the_reference_murmur2_matches_javas_known_values():
    # values from Kafka's UtilsTest / DefaultPartitionerTest: murmur2("21") = -973932308
    assert java_partition(b"21", 2**31 - 1) == (-973932308 & 0x7FFFFFFF) % (2**31 - 1)


def _partitions_of(bootstrap: str, topic: str, n: int) -> dict[str, set[int]]:
    """Every message of the topic, up to each partition's end (read when called: the producer has flushed)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}", "enable.auto.commit": False})
    total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(n))
    c.assign([TopicPartition(topic, p, 0) for p in range(n)])
    out: dict[str, set[int]] = {}
    seen = 0
    deadline = time.monotonic() + 60
    try:
        while seen < total:
            assert time.monotonic() < deadline, f"{topic}: {seen} of {total} messages read after 60 s"
            msg = c.poll(1)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.setdefault(msg.key().decode(), set()).add(msg.partition())
            seen += 1
    finally:
        c.close()
    return out


def test_facts_and_events_of_one_subject_share_the_partition_java_would_choose(tmp_path, kafka_bootstrap, capsys):
    tag = uuid.uuid4().hex[:8]
    events_topic, facts_topic = f"ev-{tag}", f"facts-{tag}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for f in admin.create_topics([NewTopic(t, 5, 1) for t in (events_topic, facts_topic)]).values():
        f.result(30)
    subjects = [f"u-{i}" for i in range(40)]
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps({
        "fact_id": f"f-{s}", "subject_id": s, "type": "CONSENT_WITHDRAWN", "effective_at": "2026-01-01T00:00:00Z",
        "recorded_at": "2026-01-01T00:00:00Z", "source_system": "cmp", "scope": {"purpose": "marketing"}}) + "\n"
        for s in subjects) + '{"fact_id": "bad"}\n')
    event = next(json.loads(line) for line in (DATA / "events" / "ipasar.jsonl").read_text().splitlines()
                 if line.startswith("{"))
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({**event, "event_id": f"e-{s}", "subject": {**event["subject"], "id": s}})
                              + "\n" for s in subjects))
    boot = ["--bootstrap-servers", kafka_bootstrap]
    assert main(["produce", *boot, "--facts", "--topic", facts_topic, str(facts)]) == 0
    out = capsys.readouterr()
    assert f"produced {len(subjects)} facts to {facts_topic} (1 malformed lines skipped)" in out.out
    assert f"{facts}:{len(subjects) + 1}:" in out.err
    assert main(["produce", *boot, "--topic", events_topic, str(events)]) == 0
    in_facts = _partitions_of(kafka_bootstrap, facts_topic, 5)
    in_events = _partitions_of(kafka_bootstrap, events_topic, 5)
    assert set(in_facts) == set(subjects) == set(in_events)
    for s in subjects:
        assert in_facts[s] == in_events[s] == {java_partition(s.encode(), 5)}, s
    assert len({p for ps in in_facts.values() for p in ps}) > 1
