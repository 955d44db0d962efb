"""The facts topic's own configuration (atl, session 10).

The ledger store is a cache of the facts topic: a store rebuilt from it (a new instance, a partition
taken over in a rebalance, a changed pseudonym key, a new store format) reads only what Kafka still
holds. ``auditor topics create`` made the facts topic with the broker's defaults: ``CreateTime`` (a
grant dated back in both its times is taken on its ``recorded_at``) and 7 days' retention (a withdrawal
older than that is gone from the topic, and from every store rebuilt after). Whoever may alter the
topic's configuration can shorten the retention on purpose. Now ``topics create`` gives the facts topic
``LogAppendTime`` and infinite retention, says what an existing one lacks, and the daemon says so at
start and when it restores a partition whose first facts are gone."""

from __future__ import annotations

import uuid

import pytest
import structlog
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from daemonkit import logs_to_the_live_stdout  # noqa: F401  (autouse fixture)
from ledgerkit import T0, audited, ledger_setup, marketing_event, records_by_event, withdrawal

from auditor.cli import main
from auditor.stream.produce import produce
from auditor.stream.topics import describe

pytestmark = pytest.mark.kafka


def _config(tmp_path, bootstrap: str, tag: str):
    config = tmp_path / "auditor.yaml"
    config.write_text(f"kafka: {{bootstrap_servers: '{bootstrap}'}}\n"
                      f"topics: {{events: [ev-{tag}], audit: au-{tag}, violations: vi-{tag}, dead_letter: dl-{tag}, "
                      f"facts: fa-{tag}}}\nledger: {{dir: '{tmp_path / 'ledger'}'}}\n")
    return config


def test_topics_create_gives_the_facts_topic_the_brokers_log_time_and_infinite_retention(
        kafka_bootstrap, tmp_path, capsys):
    tag = uuid.uuid4().hex[:8]
    config = _config(tmp_path, kafka_bootstrap, tag)
    assert main(["topics", "create", "--config", str(config), "--partitions", "2"]) == 0
    out = capsys.readouterr().out
    conf = describe(AdminClient({"bootstrap.servers": kafka_bootstrap}), [f"fa-{tag}"])[f"fa-{tag}"]
    assert conf["message.timestamp.type"] == "LogAppendTime", conf
    assert conf["retention.ms"] == "-1" and conf["retention.bytes"] == "-1", conf
    assert f"fa-{tag}: message.timestamp.type=LogAppendTime retention.ms=-1 retention.bytes=-1" in out, out
    assert "warning" not in out, out


def test_topics_create_says_what_an_existing_facts_topic_lacks_and_the_command_that_sets_it(
        kafka_bootstrap, tmp_path, capsys):
    tag = uuid.uuid4().hex[:8]
    from auditor.localkafka.broker import create_topics

    create_topics(kafka_bootstrap, [f"fa-{tag}"], 2)  # the broker's defaults: CreateTime, 7 days
    config = _config(tmp_path, kafka_bootstrap, tag)
    assert main(["topics", "create", "--config", str(config), "--partitions", "2"]) == 0
    out = capsys.readouterr().out
    assert f"warning: fa-{tag} has message.timestamp.type=CreateTime" in out, out
    assert f"warning: fa-{tag} has retention.ms=604800000" in out, out
    assert (f"--entity-name fa-{tag} --add-config message.timestamp.type=LogAppendTime,retention.ms=-1,"
            "retention.bytes=-1,cleanup.policy=delete") in out, out


def test_a_store_restored_from_a_facts_topic_that_lost_its_first_facts_says_so(tmp_path, kafka_bootstrap):
    """What retention does, done at once (delete_records): u-1's withdrawal is gone from the topic before a
    new instance restores the partition. The event is judged without it (ALLOW on its own claim: what the
    auditor cannot see it cannot judge), and the daemon logs an error naming the partition and the first
    offset it still holds (before, a warning at most when the store's own range was gone; nothing here)."""
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, facts, [withdrawal("w-1", "u-1", T0), withdrawal("w-2", "u-2", T0)])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.delete_records([TopicPartition(facts, 0, 1)]).values():
        fut.result(30)
    produce(kafka_bootstrap, setup.events, [marketing_event("send-1", "u-1", T0.replace(hour=20))])
    with structlog.testing.capture_logs() as logs, audited(setup, kafka_bootstrap, 1):
        pass
    assert records_by_event(kafka_bootstrap, setup.audit) == {"send-1": [("DECISION", "ALLOW")]}
    lost = [e for e in logs if "no longer holds its first facts" in e["event"]]
    assert lost and lost[0]["partition"] == 0 and lost[0]["first_offset"] == 1, [e["event"] for e in logs]
    lacks = [e for e in logs if "lacks what `auditor topics create` sets" in e["event"]]
    assert lacks and any("retention.ms=604800000" in f for f in lacks[0]["findings"]), lacks
