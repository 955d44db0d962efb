"""The daemon on a real broker, in-process: a mixed stream in, exactly one audit record per input out.

One module-scoped run audits N inputs (compliant events, violations, the generator's malformed
messages and hand-made hostile encodings, half produced before the daemon starts and half while
it runs); each test then checks one property of what it wrote. The registry-outage test has a
run of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import socket
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import structlog
from daemonkit import (
    AuditEntry,
    Consumed,
    Feeder,
    InProcessDaemon,
    Sent,
    Setup,
    TopicTail,
    assert_exactly_once,
    chains_of,
    hostile_inputs,
    hostile_template,
    make_setup,
    mixed_events,
    read_audit,
    read_topic,
    wait_until,
)
from structlog.testing import capture_logs

from auditor.cli import main as auditor_main
from auditor.errors import DecodeError
from auditor.events.codec import event_schema, event_to_json, event_to_mapping
from auditor.events.model import Event
from auditor.events.wire import EventDecoder, encode_confluent
from auditor.localkafka.broker import console_consume
from auditor.stream.produce import encode
from auditor.stream.topictrail import verify_topic
from auditor.trail.canonical import record_from_bytes
from auditor.trail.keys import KeyRing
from auditor.trail.record import RecordType
from auditor.trail.verify import verify_trail

pytestmark = pytest.mark.kafka

N_GENERATED = 3000
HOSTILE_COPIES = 3
LOADED = {"ipasar", "waimaotong", "ipmart", "inper", "thisproduct"}


@pytest.fixture(scope="module", autouse=True)
def _logs_to_the_live_stdout():
    """In-process daemons log; an earlier test may have bound structlog to a capture stream that is
    closed by now (configure_logging under capsys). structlog's defaults print to sys.stdout as it
    is at each call."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


@dataclass
class Run:
    setup: Setup
    sent: list[Sent]
    audit: list[AuditEntry]
    violations: list[Consumed]
    dead_letters: list[Consumed]
    daemon: InProcessDaemon
    exit_code: int | None
    hostile: dict[bytes | None, frozenset[str]]

    def expected_reason(self, item: Event | bytes | None) -> str | None:
        """The dead-letter reason an input must get (the decoder's own verdict, run here as an oracle,
        and for a hand-made hostile input one of the reasons it may get), or None for an event."""
        if isinstance(item, Event):
            return None if item.policy_id in LOADED else "unknown_policy"
        try:
            EventDecoder().decode(item)
        except DecodeError as exc:
            assert item not in self.hostile or exc.reason in self.hostile[item], exc.reason
            return exc.reason
        raise AssertionError("a raw input that decodes")


def inputs() -> tuple[list[Event | bytes | None], dict[bytes | None, frozenset[str]]]:
    items: list[Event | bytes | None] = list(mixed_events(N_GENERATED))
    template = hostile_template(items)
    hostile = hostile_inputs(template)
    extra: list[Event | bytes | None] = []
    for copy in range(HOSTILE_COPIES):
        extra += [value for value, _ in hostile.values()]
        extra.append(dataclasses.replace(template, event_id=f"no-such-pack-{copy}", policy_id="nosuchpack"))
    step = len(items) // (len(extra) + 1)
    for i, x in enumerate(extra):  # spread them through the stream
        items.insert((i + 1) * step, x)
    return items, {value: reasons for value, reasons in hostile.values()}


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    setup = make_setup(tmp_path_factory.mktemp("mixed"), kafka_bootstrap, partitions=3)
    items, hostile = inputs()
    feeder = Feeder(kafka_bootstrap, setup.events)
    half = len(items) // 2
    feeder.send_all(items[:half])  # a backlog before the daemon starts ...
    daemon = InProcessDaemon(setup.config())
    with daemon, TopicTail(kafka_bootstrap, setup.audit) as tail:
        feeder.send_all(items[half:])  # ... and the rest while it runs
        tail.wait_for(len(items), 90, "(in-process daemon)")
    exit_code = daemon.exit_code
    return Run(setup, list(feeder.sent), read_audit(kafka_bootstrap, setup.audit),
               read_topic(kafka_bootstrap, setup.violations), read_topic(kafka_bootstrap, setup.dead_letter),
               daemon, exit_code, hostile)


def test_every_input_is_audited_exactly_once_in_partition_order(run: Run):
    assert run.exit_code == 0
    assert len(run.sent) == N_GENERATED + HOSTILE_COPIES * 8
    assert_exactly_once(run.audit, run.sent, run.setup.events)
    kinds = Counter(e.record.record_type for e in run.audit)
    assert kinds[RecordType.REJECTION] == sum(run.expected_reason(s.item) is not None for s in run.sent)
    assert {e.record.instance_id for e in run.audit} == {run.daemon.daemon.cfg.instance_id}


def test_violations_topic_matches_offline_check(run: Run, tmp_path: Path):
    by_pack: dict[str, list[Event]] = defaultdict(list)
    for s in run.sent:
        if s.event is not None and s.event.policy_id in LOADED:
            by_pack[s.event.policy_id].append(s.event)
    offline: dict[str, frozenset[str]] = {}
    audited = 0
    for pack, events in sorted(by_pack.items()):
        path = tmp_path / f"{pack}.jsonl"
        path.write_text("".join(event_to_json(e) + "\n" for e in events))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert auditor_main(["check", "--policy", pack, str(path), "--format", "jsonl"]) == 0
        for line in out.getvalue().splitlines():
            doc = json.loads(line)
            audited += 1
            if doc["verdict"] == "VIOLATION":
                offline[doc["event_id"]] = frozenset(v["rule"] for v in doc["violations"])
    assert audited == sum(len(v) for v in by_pack.values())
    online: dict[str, frozenset[str]] = {}
    for m in run.violations:
        doc = json.loads(m.value or b"")
        assert m.key == doc["event_id"].encode()
        assert doc["event_id"] not in online, f"violation of {doc['event_id']} published twice"
        online[doc["event_id"]] = frozenset(v["rule"] for v in doc["violations"])
    assert len(offline) > 100, "the stream should hold plenty of violations"
    assert online.keys() == offline.keys(), (sorted(online.keys() - offline.keys())[:5],
                                             sorted(offline.keys() - online.keys())[:5])
    differ = [e for e in offline if online[e] != offline[e]]
    assert not differ, f"rule sets differ for {differ[:5]}"


def test_malformed_inputs_are_dead_lettered_with_headers_counted_and_recorded(run: Run):
    sent = {(s.partition, s.offset): s for s in run.sent}
    expected = {k: run.expected_reason(s.item) for k, s in sent.items()}
    expected = {k: r for k, r in expected.items() if r is not None}
    records = {(e.record.source.partition, e.record.source.offset): e.record for e in run.audit}
    got: dict[tuple[int, int], str] = {}
    for m in run.dead_letters:
        h = {k: v.decode() for k, v in m.headers.items()}
        assert h["auditor.source.topic"] == run.setup.events
        where = (int(h["auditor.source.partition"]), int(h["auditor.source.offset"]))
        assert where not in got, f"{where} dead-lettered twice"
        got[where] = h["auditor.error.reason"]
        source = sent[where]
        original = encode(source.item) if isinstance(source.item, Event) else source.item or b""
        assert (m.value or b"") == original, f"dead letter {where} does not carry the input unchanged"
        assert h["auditor.error.class"] in {"DecodeError", "SchemaError"}
        assert h["auditor.error.message"]
        record = records[where]  # a REJECTION record for the same input, at the chain/seq named
        assert record.record_type is RecordType.REJECTION and record.rejection is not None
        assert record.rejection.reason == h["auditor.error.reason"]
        assert record.rejection.message == h["auditor.error.message"]
        assert (record.chain_id, str(record.seq)) == (h["auditor.trail.chain"], h["auditor.trail.seq"])
        if h["auditor.error.reason"] == "unknown_schema":
            assert h["auditor.error.class"] == "SchemaError"
    for where, reason in got.items():
        # a hand-made hostile input may get any reason it is listed with: the compiled decoder
        # refuses a negative union index as hostile_encoding where fastavro may fail on the branch
        # it picks from the end (undecodable)
        item = sent[where].item
        if not isinstance(item, Event) and reason in run.hostile.get(item, frozenset()):
            expected[where] = reason
    assert got == expected
    by_reason = Counter(got.values())
    for reason in ("hostile_encoding", "oversize", "unknown_schema", "undecodable", "unknown_policy"):
        assert by_reason[reason] >= HOSTILE_COPIES, reason
    for reason, n in by_reason.items():
        assert run.daemon.sample("auditor_dead_letters_total", {"reason": reason}) == n, reason
    audited = run.daemon.registry.get_sample_value
    total = sum(s.value for m in run.daemon.registry.collect() if m.name == "auditor_events_audited"
                for s in m.samples if s.name == "auditor_events_audited_total")
    assert total == len(run.sent) - len(got)
    assert audited("auditor_transactions_total", {"outcome": "abort"}) == 0


def test_audit_topic_verifies(run: Run):
    report = verify_topic({"bootstrap.servers": run.setup.bootstrap}, run.setup.audit)
    assert report.ok, [str(i) for i in report.issues[:5]]
    assert report.records == len(run.sent)
    assert report.chains == {c: len(r) for c, r in chains_of(run.audit).items()}


def test_file_copy_verifies_and_mirrors_the_topic(run: Run):
    assert run.setup.trail_dir is not None
    report = verify_trail(run.setup.trail_dir, KeyRing.load(run.setup.keys_dir).verifier)
    assert report.ok, [str(i) for i in report.issues[:5]]
    assert report.records == len(run.sent)
    assert report.chains == {c: len(r) for c, r in chains_of(run.audit).items()}
    assert report.checkpoints > 0


def test_kafka_console_consumer_agrees_on_the_count(run: Run):
    # stops at the expected count; the idle timeout, generous under load, only ends a short run
    lines = console_consume(run.setup.bootstrap, run.setup.audit, max_messages=len(run.sent), timeout_ms=30_000,
                            isolation_level="read_committed", print_partition=True,
                            extra_args=["--formatter-property", "print.value=false",
                                        "--formatter-property", "print.offset=true"])
    positions = {tuple(line.split("\t")) for line in lines if line.startswith("Partition:")}
    assert len(positions) == len(lines) == len(run.sent)
    assert positions == {(f"Partition:{e.partition}", f"Offset:{e.offset}") for e in run.audit}


# ---------------------------------------------------------------- a dependency outage

class _Registry(BaseHTTPRequestHandler):
    """A schema registry that knows every id as the bundled event schema."""

    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        _Registry.requests.append(self.path)
        body = json.dumps({"schema": json.dumps(event_schema())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_registry_outage_pauses_and_retries_instead_of_dead_lettering(kafka_bootstrap: str, tmp_path: Path):
    port = _closed_port()
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False,
                       schemas={"registry_url": f"http://127.0.0.1:{port}"})
    events = [e for e in mixed_events(40, seed=3) if isinstance(e, Event)][:7]
    feeder = Feeder(kafka_bootstrap, setup.events)
    feeder.send_all(events[:3])
    feeder.send(encode_confluent(event_to_mapping(events[3]), 31), partition=0)  # id unknown locally
    feeder.send_all(events[4:])
    blocked_at = next(s.offset for s in feeder.sent if isinstance(s.item, bytes))
    with capture_logs() as logs, InProcessDaemon(setup.config()) as daemon, \
            TopicTail(kafka_bootstrap, setup.audit) as tail:
        # while the registry is down: the batch is retried, nothing dead-lettered, nothing past the gap
        wait_until(lambda: sum(e["event"].startswith("dependency unavailable") for e in logs) >= 3, 30,
                   lambda: f"three retries of the paused batch; log events {[e['event'] for e in logs][-5:]}")
        tail.poll(0.5)
        audited = [record_from_bytes(m.value or b"").source.offset or 0 for m in tail.messages]
        assert all(offset < blocked_at for offset in audited), f"audited past the paused input: {audited}"
        assert read_topic(kafka_bootstrap, setup.dead_letter) == []
        assert daemon.sample("auditor_dead_letters_total", {"reason": "unknown_schema"}) == 0
        # the registry comes back: the paused batch goes through, as an audited event
        _Registry.requests = []
        server = HTTPServer(("127.0.0.1", port), _Registry)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            tail.wait_for(len(feeder.sent), 30, "after the registry came back")
        finally:
            server.shutdown()
            server.server_close()
    assert _Registry.requests and set(_Registry.requests) == {"/schemas/ids/31"}
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(entries, feeder.sent, setup.events)
    assert all(e.record.record_type is RecordType.DECISION for e in entries)
    assert [e.record.event_id for e in entries] == [e.event_id for e in events]
    assert read_topic(kafka_bootstrap, setup.dead_letter) == []


# ---------------------------------------------------------------- the file copy falling behind

def test_file_copy_catches_up_with_every_chain_the_topic_holds_more_of(kafka_bootstrap: str, tmp_path: Path):
    """Records committed to Kafka but missing from the file copy (a crash between the two, or a
    copy enabled later) are backfilled from the audit topic, also for chains that get no new input."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=True)
    events = [e for e in mixed_events(700, seed=5) if isinstance(e, Event)]
    feeder = Feeder(kafka_bootstrap, setup.events)
    for i, e in enumerate(events[:300]):
        feeder.send(e, partition=i % 3)
    feeder.flush()
    with TopicTail(kafka_bootstrap, setup.audit) as tail:
        with InProcessDaemon(dataclasses.replace(setup.config(), trail_dir=None)):  # Kafka only
            tail.wait_for(300, 60, "(without the file copy)")
        for e in events[300:400]:
            feeder.send(e, partition=0)  # new input for one chain only
        feeder.flush()
        with InProcessDaemon(setup.config()):
            tail.wait_for(400, 60, "(with the file copy)")
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(entries, feeder.sent, setup.events)
    assert setup.trail_dir is not None
    report = verify_trail(setup.trail_dir, KeyRing.load(setup.keys_dir).verifier)
    assert report.ok, [str(i) for i in report.issues[:5]]
    assert report.chains == {c: len(r) for c, r in chains_of(entries).items()}
