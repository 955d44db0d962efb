"""Which trail-topic settings would let Kafka delete the trail, and the fix the daemon names."""

from __future__ import annotations

from auditor.stream.topics import findings_of, refusal_message, trail_topic_config


def test_infinite_retention_and_delete_policy_pass():
    conf = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
    assert findings_of({"audit": conf, "audit.checkpoints": conf}) == []


def test_finite_time_or_size_and_compaction_are_each_named():
    found = findings_of({
        "audit": {"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete"},
        "audit.checkpoints": {"retention.ms": "-1", "retention.bytes": "1073741824",
                              "cleanup.policy": "compact"},  # compaction keeps one record per key (chain)
    })
    assert [str(f) for f in found] == ["audit has retention.ms=604800000",
                                       "audit.checkpoints has retention.bytes=1073741824",
                                       "audit.checkpoints has cleanup.policy=compact"]


def test_the_refusal_names_the_command_for_each_topic():
    found = findings_of({"audit": {"retention.ms": "604800000"}})
    text = refusal_message(found, "kafka:9092")
    assert ("kafka-configs.sh --bootstrap-server kafka:9092 --alter --entity-type topics --entity-name audit "
            "--add-config retention.ms=-1,retention.bytes=-1") in text
    assert "trail.accept_finite_retention" in text


def test_three_brokers_also_get_min_insync_replicas_two():
    assert trail_topic_config(1) == {"retention.ms": "-1", "retention.bytes": "-1"}
    assert trail_topic_config(3)["min.insync.replicas"] == "2"


def test_a_compacted_topic_is_told_to_delete_instead():
    found = findings_of({"audit": {"retention.ms": "-1", "cleanup.policy": "compact"}})
    assert "--entity-name audit --add-config retention.ms=-1,retention.bytes=-1,cleanup.policy=delete" in \
        refusal_message(found, "k:9092")
