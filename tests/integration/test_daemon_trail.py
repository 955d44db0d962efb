"""The daemon's trail on a real broker: infinite retention enforced, a signed checkpoint in every
transaction (``auditor verify kafka://`` passes on what it wrote, also after a restart), restore
only from signed checkpoints (a forged record is named and never continued; a chain whose
records are gone continues from its checkpoint), and witnesses cosigning without blocking."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from daemonkit import (
    Feeder,
    InProcessDaemon,
    Setup,
    TopicTail,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    make_setup,
    mixed_events,
    read_audit,
    set_topic_config,
)
from structlog.testing import capture_logs

from auditor.cli import main
from auditor.config import Config
from auditor.errors import ConfigError
from auditor.events.model import Event
from auditor.stream.chainrestore import restore_chains
from auditor.stream.topics import checkpoint_topic_of, describe
from auditor.trail.chain import ChainHead, seal_bytes
from auditor.trail.keys import KeyRing
from auditor.witness import keys as witness_keys
from auditor.witness.core import TrustedLog, Witness
from auditor.witness.server import make_server, serve_in_thread
from auditor.witness.state import WitnessState

pytestmark = pytest.mark.kafka

WEEK_MS = str(7 * 24 * 3600 * 1000)


def events(n: int, seed: int) -> list[Event]:
    return [e for e in mixed_events(n, seed=seed) if isinstance(e, Event)]


def feed(setup: Setup, items: list[Event], partitions: int = 2) -> Feeder:
    feeder = Feeder(setup.bootstrap, setup.events)
    for i, e in enumerate(items):
        feeder.send(e, partition=i % partitions)
    feeder.flush()
    return feeder


def run_until(cfg: Config, setup: Setup, total: int) -> InProcessDaemon:
    with InProcessDaemon(cfg) as daemon, TopicTail(setup.bootstrap, setup.audit) as tail:
        tail.wait_for(total, 90, "(in-process daemon)")
    assert daemon.exit_code == 0
    return daemon


def verify(setup: Setup, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", f"kafka://{setup.bootstrap}/{setup.audit}", "--keys", str(setup.keys_dir), *extra])
    return code, capsys.readouterr().out


# ---------------------------------------------------------------- retention

def test_topics_create_makes_the_trail_topics_with_infinite_retention(kafka_bootstrap, tmp_path, capsys):
    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "auditor.yaml"
    config.write_text(f"kafka: {{bootstrap_servers: '{kafka_bootstrap}'}}\n"
                      f"topics: {{events: [ev-{tag}], audit: au-{tag}, violations: vi-{tag}, dead_letter: dl-{tag}}}\n")
    assert main(["topics", "create", "--config", str(config), "--partitions", "2"]) == 0
    assert f"au-{tag}.checkpoints" in capsys.readouterr().out
    conf = describe(AdminClient({"bootstrap.servers": kafka_bootstrap}), [f"au-{tag}", f"au-{tag}.checkpoints",
                                                                           f"ev-{tag}"])
    for topic in (f"au-{tag}", f"au-{tag}.checkpoints"):
        assert conf[topic]["retention.ms"] == "-1" and conf[topic]["retention.bytes"] == "-1", conf[topic]
    assert conf[f"ev-{tag}"]["retention.ms"] != "-1"  # only the trail is kept forever
    # run again on existing topics: it shows the trail topics' configuration, and refuses one Kafka
    # would delete with the command that fixes it, as the daemon does
    assert main(["topics", "create", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "nothing (all topics exist)" in out
    assert f"au-{tag}.checkpoints: retention.ms=-1 retention.bytes=-1 cleanup.policy=delete" in out
    set_topic_config(kafka_bootstrap, f"au-{tag}", "retention.ms", WEEK_MS)
    assert main(["topics", "create", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"au-{tag} has retention.ms={WEEK_MS}" in err and "Traceback" not in err
    assert (f"kafka-configs.sh --bootstrap-server {kafka_bootstrap} --alter --entity-type topics --entity-name "
            f"au-{tag} --add-config retention.ms=-1,retention.bytes=-1") in err


def test_the_daemon_refuses_an_audit_topic_with_7_day_retention_naming_the_fix(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False)
    set_topic_config(kafka_bootstrap, setup.audit, "retention.ms", WEEK_MS)
    done = subprocess.run([sys.executable, "-m", "auditor", "run", "--config", str(setup.config_path),
                           "--instance-id", "refused"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{setup.audit} has retention.ms={WEEK_MS}" in done.stderr
    assert (f"kafka-configs.sh --bootstrap-server {kafka_bootstrap} --alter --entity-type topics --entity-name "
            f"{setup.audit} --add-config retention.ms=-1,retention.bytes=-1") in done.stderr
    assert "trail.accept_finite_retention" in done.stderr and "Traceback" not in done.stderr


def test_finite_retention_accepted_explicitly_runs_and_shows_in_the_metric(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False)
    set_topic_config(kafka_bootstrap, checkpoint_topic_of(setup.audit), "retention.ms", WEEK_MS)
    with pytest.raises(ConfigError, match="retention.ms=604800000"):
        InProcessDaemon(setup.config()).daemon.run()
    items = events(30, seed=2)
    feed(setup, items, partitions=1)
    cfg = setup.config(**{"trail.accept_finite_retention": True})
    daemon = run_until(cfg, setup, len(items))
    assert daemon.sample("auditor_trail_retention_finite", {"topic": checkpoint_topic_of(setup.audit)}) == 1
    assert daemon.sample("auditor_trail_retention_finite", {"topic": setup.audit}) == 0


# ---------------------------------------------------------------- signed checkpoints

def test_verify_kafka_covers_every_record_of_the_daemon_before_and_after_a_restart(kafka_bootstrap, tmp_path,
                                                                                     capsys):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False, batch_max_events=50)
    items = events(900, seed=4)
    feed(setup, items[:400])
    run_until(setup.config(), setup, 400)
    code, out = verify(setup, capsys)
    assert code == 0, out
    assert "400 records in 2 chain(s)" in out and "400 records signed: intact" in out
    feed(setup, items[400:700])
    run_until(setup.config(), setup, 700)  # restored from the checkpoints, continues the chains
    code, out = verify(setup, capsys)
    assert code == 0, out
    assert "700 records in 2 chain(s)" in out and "700 records signed: intact" in out
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert sorted(e.record.seq for e in entries if e.record.chain_id.endswith("/0")) == list(range(350))


def forge(setup: Setup, chain_id: str, partition: int) -> None:
    """Someone with produce rights appends a correctly linked record, in a transaction of their own."""
    last = [e.record for e in read_audit(setup.bootstrap, setup.audit) if e.record.chain_id == chain_id][-1]
    data, _ = seal_bytes(ChainHead.after(last), last._replace(event_id="forged-event"))
    producer = Producer({"bootstrap.servers": setup.bootstrap, "transactional.id": f"forger-{uuid.uuid4()}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(setup.audit, value=data, key=chain_id.encode(), partition=partition)
    producer.commit_transaction(30)


def test_a_forged_record_is_reported_on_restore_and_never_continued(kafka_bootstrap, tmp_path, capsys):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False, batch_max_events=40)
    items = events(300, seed=6)
    feed(setup, items[:100], partitions=1)
    run_until(setup.config(), setup, 100)
    chain = f"{setup.events}/0"
    forge(setup, chain, 0)
    feed(setup, items[100:160], partitions=1)
    with capture_logs() as logs:
        daemon = run_until(setup.config(), setup, 161)
    forged = [e for e in logs if e["event"] == "forged records in the audit topic"]
    assert forged and forged[0]["chain"] == chain and "seq 100" in forged[0]["problem"]
    assert daemon.sample("auditor_trail_forged_total", {"chain": chain}) == 1
    records = [e.record for e in read_audit(kafka_bootstrap, setup.audit)]
    ours = [r for r in records if r.event_id != "forged-event"]
    assert [r.seq for r in ours] == list(range(160))  # continued from the signed head, not the forged one
    assert ours[100].prev_hash == ours[99].record_hash
    # a restore now (as on the next assignment) takes the signed head, which is the last record again (the
    # forged one lies before it: verify names it), with the source offset the ownership check compares
    keys = KeyRing.load(setup.keys_dir)
    (restored,) = restore_chains(setup.admin_conf, setup.audit, 0, checkpoint_topic_of(setup.audit), 0, [chain],
                                 keys.signer.name, keys.verifier).values()
    assert not restored.forged and restored.log.head.size == 160
    assert restored.source_offset == ours[-1].source.offset
    code, out = verify(setup, capsys)
    assert code == 1
    assert f"inserted: [{chain} seq 100]" in out  # the forged record, named
    assert "161 records in 1 chain(s)" in out and "160 records signed" in out and "1 finding(s)" in out


def test_a_chain_whose_records_are_gone_continues_from_its_checkpoint(kafka_bootstrap, tmp_path, capsys):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False, batch_max_events=40)
    items = events(300, seed=8)
    feed(setup, items[:120], partitions=1)
    run_until(setup.config(), setup, 120)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    _, high = _watermarks(kafka_bootstrap, setup.audit)
    for fut in admin.delete_records([TopicPartition(setup.audit, 0, high)]).values():
        fut.result(30)  # every record gone, as retention would do
    feed(setup, items[120:150], partitions=1)
    with capture_logs() as logs:
        run_until(setup.config(), setup, 30)
    assert any("continuing from the signed checkpoint at size 120" in str(e.get("problem")) for e in logs), logs
    seqs = [e.record.seq for e in read_audit(kafka_bootstrap, setup.audit)]
    assert seqs == list(range(120, 150))  # never a new genesis


def write_legacy_trail(setup: Setup, n: int) -> list[bytes]:
    """What an auditor from before signed checkpoints left: ``n`` events on partition 0, a chain of
    ``n`` records for them in the audit topic (transactional, no checkpoint) and the group's offset."""
    from confluent_kafka import Consumer

    from tests.unit.trail.trailkit import make_records

    feed(setup, events(2 * n, seed=12)[:n], partitions=1)
    keys = KeyRing.load(setup.keys_dir)
    head, out = None, []
    for r in make_records(keys, n, topic=setup.events):
        data, head = seal_bytes(head or ChainHead.genesis(r.chain_id), r)
        out.append(data)
    producer = Producer({"bootstrap.servers": setup.bootstrap, "transactional.id": f"legacy-{uuid.uuid4()}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for data in out:
        producer.produce(setup.audit, value=data, key=f"{setup.events}/0".encode(), partition=0)
    producer.commit_transaction(30)
    group = Consumer({"bootstrap.servers": setup.bootstrap, "group.id": setup.group, "enable.auto.commit": False})
    group.commit(offsets=[TopicPartition(setup.events, 0, n)], asynchronous=False)
    group.close()
    return out


def test_a_trail_from_before_signed_checkpoints_is_refused_naming_the_upgrade_then_adopted_explicitly(
        kafka_bootstrap, tmp_path, capsys):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False, batch_max_events=40)
    write_legacy_trail(setup, 50)
    chain = f"{setup.events}/0"
    code, out = verify(setup, capsys)
    assert code == 1 and "50 records in 1 chain(s)" in out  # nothing signs them
    # the daemon neither calls them forged nor starts a second genesis: it stops and says what to do
    done = subprocess.run([sys.executable, "-m", "auditor", "run", "--config", str(setup.config_path),
                           "--instance-id", "upgrade"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"chain {chain}: records up to seq 49" in done.stderr and "covered by no signed checkpoint" in done.stderr
    assert "trail.adopt_unsigned_chains: true" in done.stderr and "Traceback" not in done.stderr
    assert len(read_audit(kafka_bootstrap, setup.audit)) == 50  # it wrote nothing
    # adopted explicitly: checked from genesis, counted, signed in the next transaction, continued
    items = events(60, seed=13)[:30]
    feed(setup, items, partitions=1)
    with capture_logs() as logs:
        daemon = run_until(setup.config(**{"trail.adopt_unsigned_chains": True}), setup, 80)
    assert daemon.sample("auditor_trail_adopted_unsigned_total", {"chain": chain}) == 50
    assert daemon.sample("auditor_trail_forged_total", {"chain": chain}) == 0
    adopted = [e for e in logs if e["event"] == "unsigned chain adopted"]
    assert adopted and adopted[0]["records"] == 50 and "checked from genesis" in adopted[0]["problem"]
    records = [e.record for e in read_audit(kafka_bootstrap, setup.audit)]
    assert [r.seq for r in records] == list(range(80)) and records[50].prev_hash == records[49].record_hash
    code, out = verify(setup, capsys)
    assert code == 0, out
    assert "80 records in 1 chain(s)" in out and "80 records signed" in out


def test_an_unsigned_chain_that_does_not_verify_from_genesis_is_not_adopted(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False)
    legacy = write_legacy_trail(setup, 20)
    tampered = bytearray(legacy[7])
    tampered[-40] ^= 0x01  # a byte of record 7's body: its hash no longer matches
    producer = Producer({"bootstrap.servers": setup.bootstrap})
    producer.produce(setup.audit, value=bytes(tampered), key=f"{setup.events}/0".encode(), partition=0)
    producer.flush(30)  # a chain of 20 records, then a 21st that does not follow (seq 7 again)
    cfg_path = setup.config_path
    cfg_path.write_text(cfg_path.read_text() + "trail: {adopt_unsigned_chains: true}\n")
    done = subprocess.run([sys.executable, "-m", "auditor", "run", "--config", str(cfg_path),
                           "--instance-id", "upgrade"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"cannot adopt chain {setup.events}/0: seq 7 where seq 20 was due" in done.stderr
    assert "Traceback" not in done.stderr


def _watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(low), int(high)
    finally:
        c.close()


# ---------------------------------------------------------------- witnesses

def test_the_daemon_sends_checkpoints_to_a_witness_and_verify_min_witnesses_passes(kafka_bootstrap, tmp_path,
                                                                                     capsys):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False, batch_max_events=50)
    keys = KeyRing.load(setup.keys_dir)
    signer = witness_keys.generate(tmp_path / "wkey", "dpo.example.com/witness")
    vkey = tmp_path / "wkey" / witness_keys.VKEY
    w = Witness(signer, [TrustedLog(keys.signer.note_signer.verifier, keys.signer.name + "/")],
                WitnessState(tmp_path / "state.json"))
    server = make_server(w, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        cfg = setup.config(**{"trail.witnesses": [url], "trail.witness_keys": [str(vkey)]})
        items = events(500, seed=12)
        feed(setup, items[:250])
        daemon = run_until(cfg, setup, 250)
        assert daemon.sample("auditor_witness_cosigned_total", {"witness": url}) > 0
        code, out = verify(setup, capsys, "--witness-key", str(vkey), "--min-witnesses", "1")
        assert code == 0, out
        feed(setup, items[250:320])
        run_until(setup.config(), setup, 320)  # a run without the witness: it falls behind
        code, out = verify(setup, capsys, "--witness-key", str(vkey), "--min-witnesses", "1")
        assert code == 1 and "unwitnessed" in out
        feed(setup, items[320:400])
        # restarted with the witness: it holds sizes older than the restored chains; the daemon proves
        # consistency from there with the history in the topics
        daemon = run_until(cfg, setup, 400)
        assert daemon.sample("auditor_witness_failures_total", {"witness": url, "reason": "refused"}) == 0
        code, out = verify(setup, capsys, "--witness-key", str(vkey), "--min-witnesses", "1")
        assert code == 0, out
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_witness_never_blocks_the_daemon_and_is_counted(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False, batch_max_events=20)
    signer = witness_keys.generate(tmp_path / "wkey", "dpo.example.com/witness")
    assert signer is not None
    cfg = setup.config(**{"trail.witnesses": ["http://127.0.0.1:9"],
                          "trail.witness_keys": [str(tmp_path / "wkey" / witness_keys.VKEY)]})
    items = events(200, seed=14)
    feed(setup, items, partitions=1)
    daemon = run_until(cfg, setup, len(items))
    assert daemon.sample("auditor_witness_failures_total", {"witness": "http://127.0.0.1:9",
                                                             "reason": "unreachable"}) > 0
