"""What a facts topic lacks (atl, session 10): the broker's log time and infinite retention, and no
compaction (which keeps only a subject's latest fact: its birth date or withdrawal is deleted from the
topic by any later fact of the same subject, and from every store rebuilt after)."""

from __future__ import annotations

from auditor.stream.topics import FACTS_TOPIC_CONFIG, facts_findings, facts_fix_command


def test_the_config_topics_create_gives_lacks_nothing() -> None:
    assert facts_findings("facts", {**FACTS_TOPIC_CONFIG, "cleanup.policy": "delete"}) == []


def test_create_time_finite_retention_and_compaction_are_each_named() -> None:
    found = facts_findings("facts", {"message.timestamp.type": "CreateTime", "retention.ms": "604800000",
                                     "retention.bytes": "-1", "cleanup.policy": "compact,delete"})
    assert len(found) == 2
    assert found[0].startswith("facts has message.timestamp.type=CreateTime")
    assert found[1].startswith("facts has retention.ms=604800000, cleanup.policy=compact,delete")


def test_compaction_alone_is_named() -> None:
    found = facts_findings("facts", {**FACTS_TOPIC_CONFIG, "cleanup.policy": "compact"})
    assert found == [found[0]] and "cleanup.policy=compact" in found[0]


def test_the_fix_command_sets_all_of_it() -> None:
    assert facts_fix_command("facts", "k:9092").endswith(
        "--entity-name facts --add-config message.timestamp.type=LogAppendTime,retention.ms=-1,retention.bytes=-1,"
        "cleanup.policy=delete")
