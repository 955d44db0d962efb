"""The trail in Kafka on a real broker: records and checkpoints written the way the daemon will
(ChainLog, one transaction per batch carrying its covering checkpoint), then verified, replayed,
proved and turned into evidence through kafka://; forged, rewritten, deleted and truncated records
detected and named."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from trailkit import make_records

from auditor.cli import main
from auditor.policy import load_pack
from auditor.trail import KeyRing
from auditor.trail.canonical import record_from_bytes
from auditor.trail.chain import ChainHead, seal_bytes
from auditor.trail.chainlog import ChainLog, checkpoint_message

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys", "example.com/auditor")


def create(bootstrap: str, *topics: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        fut.result(30)


def write(bootstrap: str, topic: str, keys: KeyRing, records, batches: int, *, sign: bool = True,
          log: ChainLog | None = None) -> ChainLog:
    """Produce records in transactions, each carrying the checkpoint that covers it (if ``sign``)."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"test-{uuid.uuid4()}"})
    producer.init_transactions(30)
    log = log or ChainLog.genesis(records[0].chain_id)
    size = -(-len(records) // batches)
    for start in range(0, len(records), size):
        producer.begin_transaction()
        for r in records[start:start + size]:
            data, _ = log.seal(r)
            producer.produce(topic, value=data, partition=0)
        if sign:
            key, value, headers = checkpoint_message(log.checkpoint(datetime.now(UTC), keys.signer))
            producer.produce(f"{topic}.checkpoints", key=key, value=value, headers=headers, partition=0)
        producer.commit_transaction(30)
    return log


@pytest.fixture
def topic(kafka_bootstrap, keys):
    name = f"audit-{uuid.uuid4().hex[:8]}"
    create(kafka_bootstrap, name, f"{name}.checkpoints")
    return name


def url(bootstrap: str, topic: str) -> str:
    return f"kafka://{bootstrap}/{topic}"


def test_kafka_trail_verifies_replays_proves_and_makes_evidence(kafka_bootstrap, topic, keys, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setenv("AUDITOR_KEYS", str(keys.directory))
    pack_hash = load_pack("ipasar").content_hash  # so that the evidence finds the pack file
    records = [r._replace(decision=r.decision._replace(pack_hash=pack_hash))
               for r in make_records(keys, 120, topic="events")]
    write(kafka_bootstrap, topic, keys, records, batches=6)
    assert main(["verify", url(kafka_bootstrap, topic)]) == 0
    out = capsys.readouterr().out
    assert "120 records in 1 chain(s), 6 valid checkpoint(s), 120 records signed: intact" in out
    assert main(["replay", url(kafka_bootstrap, topic), "--stats"]) == 0
    assert "records: 120" in capsys.readouterr().out
    proof = tmp_path / "p.json"
    assert main(["prove", url(kafka_bootstrap, topic), "--seq", "77", "--out", str(proof)]) == 0
    assert main(["verify-proof", str(proof)]) == 0
    evidence = tmp_path / "ev.zip"
    assert main(["evidence", url(kafka_bootstrap, topic), "--event-id", records[42].event_id,
                 "--out", str(evidence)]) == 0
    assert main(["verify-evidence", str(evidence), "--pubkey", str(keys.directory / "signing.pub")]) == 0
    assert "evidence holds: events/0 seq 42" in capsys.readouterr().out


def test_a_forged_record_committed_without_its_checkpoint_is_named(kafka_bootstrap, topic, keys, capsys,
                                                                   monkeypatch):
    monkeypatch.setenv("AUDITOR_KEYS", str(keys.directory))
    log = write(kafka_bootstrap, topic, keys, make_records(keys, 60, topic="events"), batches=3)
    # someone with produce rights appends a correctly linked record in a transaction of their own
    write(kafka_bootstrap, topic, keys, make_records(keys, 1, topic="events", seed=9), batches=1, sign=False,
          log=log)
    assert main(["verify", url(kafka_bootstrap, topic)]) == 1
    out = capsys.readouterr().out
    assert "unsigned: [events/0 seq 60]" in out and "forged" in out


def test_records_deleted_with_the_admin_api_are_named(kafka_bootstrap, topic, keys, capsys, monkeypatch):
    monkeypatch.setenv("AUDITOR_KEYS", str(keys.directory))
    write(kafka_bootstrap, topic, keys, make_records(keys, 60, topic="events"), batches=3)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.delete_records([TopicPartition(topic, 0, 25)]).values():
        fut.result(30)
    assert main(["verify", url(kafka_bootstrap, topic)]) == 1
    out = capsys.readouterr().out
    assert "deleted: [events/0 seq 0]" in out


def test_no_checkpoint_topic_is_not_intact(kafka_bootstrap, keys, capsys, monkeypatch):
    monkeypatch.setenv("AUDITOR_KEYS", str(keys.directory))
    name = f"audit-{uuid.uuid4().hex[:8]}"
    create(kafka_bootstrap, name)
    write(kafka_bootstrap, name, keys, make_records(keys, 10, topic="events"), batches=1, sign=False)
    assert main(["verify", url(kafka_bootstrap, name)]) == 1
    assert "no valid signed checkpoint" in capsys.readouterr().out


def test_an_unreachable_broker_is_exit_3_with_one_line(keys, tmp_path):
    env = {"AUDITOR_KEYS": str(keys.directory), "PATH": "/usr/bin:/bin"}
    # both commands wait out their 3 s timeout side by side
    procs = [subprocess.Popen([sys.executable, "-m", "auditor", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for argv in (["verify", "kafka://127.0.0.1:1/audit", "--timeout", "3"],
                          ["replay", "kafka://127.0.0.1:1/audit", "--timeout", "3"])]
    for proc, (_, stderr) in [(proc, proc.communicate(timeout=120)) for proc in procs]:
        assert proc.returncode == 3, stderr
        lines = [ln for ln in stderr.splitlines() if ln.startswith("auditor:")]
        assert len(lines) == 1 and "Traceback" not in stderr, stderr


def test_records_committed_while_verify_reads_are_left_for_the_next_run(kafka_bootstrap, topic, keys):
    """A live topic: a transaction (records + their checkpoint) committed after the checkpoints were
    read is not read either, instead of showing up as unsigned records."""
    from auditor.stream.topictrail import KafkaSource
    from auditor.trail.verify import Policy, verify_source

    records = make_records(keys, 40, topic="events")
    log = write(kafka_bootstrap, topic, keys, records[:20], batches=2)

    class Live(KafkaSource):
        def checkpoints(self):
            yield from super().checkpoints()
            write(kafka_bootstrap, topic, keys, records[20:], batches=1, log=log)  # the daemon goes on

    source = Live({"bootstrap.servers": kafka_bootstrap}, topic, f"{topic}.checkpoints")
    report = verify_source(source, keys.verifier, (), Policy())
    assert report.ok, [str(i) for i in report.issues]
    assert report.records == 20 and report.checkpoints == 2


def test_a_rewritten_record_is_named(kafka_bootstrap, topic, keys, capsys, monkeypatch):
    """Kafka cannot change a record in place: a rewrite is a changed copy of a record, re-hashed (hashes
    need no key) and produced after the genuine one; no signed checkpoint covers it."""
    monkeypatch.setenv("AUDITOR_KEYS", str(keys.directory))
    records = make_records(keys, 60, topic="events")
    log = ChainLog.genesis(records[0].chain_id)
    copies = [log.seal(r)[0] for r in records[:31]]
    write(kafka_bootstrap, topic, keys, records, batches=3)
    genuine = record_from_bytes(copies[30])
    forged, _ = seal_bytes(ChainHead("events/0", 30, genuine.prev_hash),
                           genuine._replace(event_id="rewritten-event"))
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, value=forged, partition=0)
    producer.flush(30)
    assert main(["verify", url(kafka_bootstrap, topic)]) == 1
    out = capsys.readouterr().out
    assert "inserted: [events/0 seq 30]" in out and "NOT intact" in out, out


def test_a_topic_truncated_to_its_end_is_named(kafka_bootstrap, topic, keys, capsys, monkeypatch):
    """Every record deleted (as retention or delete_records up to the end would): the signed checkpoints
    still say how many records there were."""
    monkeypatch.setenv("AUDITOR_KEYS", str(keys.directory))
    write(kafka_bootstrap, topic, keys, make_records(keys, 40, topic="events"), batches=2)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.delete_records([TopicPartition(topic, 0, -1)]).values():
        fut.result(30)
    assert main(["verify", url(kafka_bootstrap, topic)]) == 1
    out = capsys.readouterr().out
    assert "truncated: [events/0 seq 0]" in out and "records seq 0..39 were removed" in out, out
