"""Which trail-topic settings would let Kafka delete the trail, and the fix the daemon names."""

from __future__ import annotations

import pytest

from auditor.cli import main
from auditor.stream.topics import (
    TRAIL_TOPIC_CONFIG,
    checkpoint_topic_of,
    findings_of,
    fix_command,
    refusal_message,
    trail_topic_config,
)


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


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_topics_help_teaches_what_it_creates_and_the_fix_commands(capsys):
    text = _help(["topics", "--help"], capsys)
    assert _help(["topics", "create", "--help"], capsys) == text
    flat = " ".join(text.replace("\\\n", " ").split())
    for key, value in {**TRAIL_TOPIC_CONFIG, **trail_topic_config(3)}.items():
        assert f"{key}={value}" in flat, key
    assert checkpoint_topic_of("AUDIT_TOPIC") in flat and "3 or more brokers" in flat
    assert " ".join(fix_command("AUDIT_TOPIC", "HOST:PORT").split()) in flat
    assert "cleanup.policy=delete" in flat and "trail.accept_finite_retention" in flat
    assert "trail.adopt_unsigned_chains" in flat and "exit status" in flat
