"""What the fault suite adds to daemonkit: daemons under a supervisor (with the test hook), an
independent reader of the audit topic that recomputes every hash and link from the schema and
the documented hashing, Kafka's own console consumer as a second counter, poison inputs, and
the one check every scenario ends with.

Independence: the reader never calls the code under test for the hash math. It decodes each
audit record with fastavro from ``schemas/audit_record.avsc`` (logical types off) and checks
with hashlib what README "The audit trail" documents:

- ``record_hash = SHA-256(0x00 || the record's bytes before the hash)``, the last 32 bytes;
- ``prev_hash`` of seq 0 is ``SHA-256(0x03 || chain_id)``, of seq n the record hash of seq n-1;
- ``body_len`` is the byte length from ``record_type`` up to the hash;
- the bytes are the Avro binary encoding (fastavro re-encodes them to the same bytes);
- one chain per source partition ``<topic>/<partition>``, in audit partition ``p % audit partitions``.

Every wait is bounded and says what it waited for.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from daemonkit import (
    DaemonProcess,
    Feeder,
    PacedFeeder,
    Sent,
    Setup,
    make_setup,
    mixed_events,
    wait_progressing,
    wait_until,
)

from auditor.events.model import Event
from auditor.localkafka.tools import console_consume
from auditor.stream.produce import encode

REPO = Path(__file__).resolve().parents[2]
AUDIT_SCHEMA = REPO / "auditor" / "schemas" / "audit_record.avsc"
#: exit codes an orchestrator may see from a daemon that stopped itself (README, exitcodes): a fatal
#: Kafka error (3) or a watchdog (4). A traceback (1), a configuration error at start (2) or an
#: internal error (70) is a failure of the daemon, never a way to recover from a fault.
RESTARTABLE = {3, 4}
HOOK_STEPS = ("after_begin", "after_produce", "after_send_offsets", "after_commit", "after_heads")


# ---------------------------------------------------------------- the independent reader

def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


_SCHEMA = fastavro.parse_schema(_strip_logical(json.loads(AUDIT_SCHEMA.read_text())), named_schemas={})


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@dataclass(frozen=True)
class Row:
    """One committed audit-topic message, decoded by the reader."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    record: dict[str, Any]

    @property
    def source(self) -> tuple[str, int, int]:
        s = self.record["source"]
        return (s["topic"], s["partition"], s["offset"])


@dataclass
class AuditCount:
    rows: list[Row]
    problems: list[str]
    chains: dict[str, int]

    def by_source(self) -> dict[tuple[str, int, int], list[Row]]:
        out: dict[tuple[str, int, int], list[Row]] = defaultdict(list)
        for r in self.rows:
            out[r.source].append(r)
        return out


def read_committed(bootstrap: str, topic: str, timeout: float = 60.0, *, lower_bound: bool = False
                   ) -> list[tuple[int, int, bytes | None, bytes, list[tuple[str, bytes]]]]:
    """(partition, offset, key, value, headers) of every committed message, read to each partition's end.

    ``lower_bound``: return what was read when ``timeout`` passes (while the daemon writes, a transaction
    may be open at every moment and a partition's end never comes) instead of failing."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=30)
    meta = md.topics.get(topic)
    assert meta is not None and meta.error is None, f"topic {topic} is not readable: {meta and meta.error}"
    parts = sorted(meta.partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"f9-reader-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "enable.partition.eof": True, "fetch.message.max.bytes": 64 * 1024 * 1024,
                  "log_level": 3})
    out: list[tuple[int, int, bytes | None, bytes, list[tuple[str, bytes]]]] = []
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(eof) < len(parts):
            if lower_bound and time.monotonic() >= deadline:
                break
            assert time.monotonic() < deadline, \
                f"{topic}: partitions {sorted(set(parts) - eof)} not read to their end after {timeout:.0f}s"
            for m in c.consume(1000, 0.5):
                err = m.error()
                if m.partition() in eof:
                    continue  # read to its end once: what came later is not counted (a snapshot)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise AssertionError(f"reading {topic}: {err}")
                out.append((m.partition(), m.offset(), m.key(), m.value() or b"", list(m.headers() or [])))
    finally:
        c.close()
    return out


def count_audit(bootstrap: str, topic: str) -> AuditCount:
    """Decode every committed audit record and recompute its hash, link, body length and chain."""
    raw = read_committed(bootstrap, topic)
    audit_partitions = len(AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=30)
                           .topics[topic].partitions)
    problems: list[str] = []
    rows: list[Row] = []
    for p, o, key, value, _ in sorted(raw, key=lambda m: (m[0], m[1])):
        where = f"{topic}/{p}@{o}"
        buf = io.BytesIO(value)
        try:
            rec = fastavro.schemaless_reader(buf, _SCHEMA, None)
        except Exception as exc:  # noqa: BLE001 - any decode failure is a finding
            problems.append(f"{where}: not an audit record ({type(exc).__name__}: {exc})")
            continue
        assert isinstance(rec, dict)
        if buf.tell() != len(value):
            problems.append(f"{where}: {len(value) - buf.tell()} trailing bytes")
        again = io.BytesIO()
        fastavro.schemaless_writer(again, _SCHEMA, rec)
        if again.getvalue() != value:
            problems.append(f"{where}: not the canonical Avro encoding of its own fields")
        if rec["record_hash"] != value[-32:]:
            problems.append(f"{where}: record_hash is not the last field")
        if hashlib.sha256(b"\x00" + value[:-32]).digest() != rec["record_hash"]:
            problems.append(f"{where}: record_hash != SHA-256(0x00 || bytes before it)")
        chain = rec["chain_id"]
        head = _varint(len(chain.encode())) + chain.encode() + _varint(rec["seq"]) + rec["prev_hash"]
        if len(value) - 32 - len(head) - len(_varint(rec["body_len"])) != rec["body_len"]:
            problems.append(f"{where}: body_len {rec['body_len']} is not the body's length")
        s = rec["source"]
        if chain != f"{s['topic']}/{s['partition']}":
            problems.append(f"{where}: chain {chain} holds a record of {s['topic']}/{s['partition']}")
        if key != chain.encode():
            problems.append(f"{where}: key {key!r} is not the chain id")
        if s["partition"] is not None and s["partition"] % audit_partitions != p:
            problems.append(f"{where}: chain {chain} written to audit partition {p}")
        rows.append(Row(p, o, key, value, rec))
    chains: dict[str, list[Row]] = defaultdict(list)
    for r in rows:  # (partition, offset) order: a chain's order in its one audit partition
        chains[r.record["chain_id"]].append(r)
    for chain, rs in chains.items():
        expected_prev = hashlib.sha256(b"\x03" + chain.encode()).digest()
        for i, r in enumerate(rs):
            where = f"{topic}/{r.partition}@{r.offset}"
            if r.record["seq"] != i:
                problems.append(f"{where}: chain {chain} has seq {r.record['seq']} at position {i}")
            if r.record["prev_hash"] != expected_prev:
                problems.append(f"{where}: chain {chain} seq {r.record['seq']} does not link to its predecessor")
            expected_prev = r.record["record_hash"]
            if i and rs[i - 1].source[2] >= r.source[2]:
                problems.append(f"{where}: chain {chain} source offsets go back "
                                f"({rs[i - 1].source[2]} then {r.source[2]})")
    return AuditCount(rows, problems, {c: len(rs) for c, rs in chains.items()})


def console_count(bootstrap: str, topic: str, expected: int, timeout_ms: int = 60_000) -> Counter[tuple[int, int]]:
    """(partition, offset) of each committed message as Kafka's own ConsoleConsumer (Java) sees it.

    It stops at ``expected`` messages, or after ``timeout_ms`` without one (generous: a loaded machine
    makes the JVM slow to fetch, and stopping early would read as loss)."""
    lines = console_consume(bootstrap, topic, max_messages=expected, timeout_ms=timeout_ms,
                            isolation_level="read_committed",
                            extra_args=["--formatter-property", "print.partition=true",
                                        "--formatter-property", "print.offset=true",
                                        "--formatter-property", "print.value=false"])
    seen: Counter[tuple[int, int]] = Counter()
    for line in lines:
        fields = dict(part.split(":", 1) for part in line.split("\t") if ":" in part)
        if "Partition" in fields and "Offset" in fields:
            seen[(int(fields["Partition"]), int(fields["Offset"]))] += 1
    return seen


# ---------------------------------------------------------------- the verdict of a scenario

@dataclass
class Expect:
    """What the audit topic must hold after a scenario: one record per delivered input."""

    sent: list[Sent]
    topic: str
    #: source offsets (partition, offset) that must be REJECTION records (poison), with the reason's family
    rejected: dict[tuple[int, int], str] = field(default_factory=dict)


def assert_trail_intact(setup: Setup, expect: Expect, *, console: bool = True, verify_cli: bool = True,
                        dead_letters: bool = True, file_copies: Iterable[Path] = ()) -> AuditCount:
    """0 lost, 0 duplicated, chains contiguous and linked, counted twice; `auditor verify` passes on
    each instance's file copy (which must hold the topic's records byte for byte) and on the topic."""
    got = count_audit(setup.bootstrap, setup.audit)
    assert not got.problems, f"{len(got.problems)} problems in the audit topic:\n" + "\n".join(got.problems[:15])
    by_source = got.by_source()
    wanted = {(expect.topic, s.partition, s.offset) for s in expect.sent}
    duplicated = sorted(k for k, rs in by_source.items() if len(rs) > 1)
    lost = sorted(wanted - by_source.keys())
    extra = sorted(by_source.keys() - wanted)
    assert not duplicated, f"{len(duplicated)} inputs audited more than once, e.g. {duplicated[:5]}"
    assert not lost, f"{len(lost)} of {len(wanted)} inputs never audited, e.g. {lost[:5]}"
    assert not extra, f"{len(extra)} records of inputs never sent, e.g. {extra[:5]}"
    for (p, o), family in expect.rejected.items():
        rec = by_source[(expect.topic, p, o)][0].record
        assert rec["record_type"] == "REJECTION", f"poison input at {p}@{o} was audited as {rec['record_type']}"
        assert family in rec["rejection"]["reason"], f"poison at {p}@{o}: reason {rec['rejection']['reason']!r}"
    if console:
        mine = Counter((r.partition, r.offset) for r in got.rows)
        java = console_count(setup.bootstrap, setup.audit, expected=len(got.rows))
        assert java == mine, (f"Kafka's ConsoleConsumer sees {sum(java.values())} committed records, the reader "
                              f"{sum(mine.values())}; differing: {sorted((java - mine) + (mine - java))[:5]}")
    if dead_letters:
        assert_dead_letters(setup, got)
    if verify_cli:
        assert_verify_passes(setup, file_copies)
    for trail in file_copies:
        assert_file_copy_mirrors(trail, got)
    return got


def assert_file_copy_mirrors(trail: Path, got: AuditCount) -> None:
    """Every record of a daemon's file copy is the topic's record of that chain and seq, byte for byte
    (compared by record hash, read with fastavro from the segment files)."""
    topic = {(r.record["chain_id"], r.record["seq"]): r.record["record_hash"] for r in got.rows}
    seen = 0
    for segment in sorted((trail / "segments").glob("*.avro")):
        with segment.open("rb") as fh:
            for rec in fastavro.reader(fh):
                assert isinstance(rec, dict)
                key = (rec["chain_id"], rec["seq"])
                assert key in topic, f"{segment.name}: {key} is in the file copy but not in the audit topic"
                assert rec["record_hash"] == topic[key], f"{segment.name}: {key} differs from the audit topic"
                seen += 1
    assert seen, f"the file copy {trail} holds no records"


def assert_dead_letters(setup: Setup, got: AuditCount) -> None:
    """Every REJECTION record has exactly one dead letter naming it, from the same source offset."""
    rejections = {(r.record["chain_id"], r.record["seq"]): r for r in got.rows
                  if r.record["record_type"] == "REJECTION"}
    named: Counter[tuple[str, int]] = Counter()
    for p, o, _key, value, headers in read_committed(setup.bootstrap, setup.dead_letter):
        h = {k: v for k, v in headers}
        where = f"{setup.dead_letter}/{p}@{o}"
        assert "auditor.trail.chain" in h and "auditor.trail.seq" in h, f"{where}: no trail headers"
        ref = (h["auditor.trail.chain"].decode(), int(h["auditor.trail.seq"]))
        named[ref] += 1
        rec = rejections.get(ref)
        assert rec is not None, f"{where} names {ref}, which is no rejection record"
        src = rec.record["source"]
        assert h["auditor.source.offset"] == str(src["offset"]).encode(), f"{where}: source offset header"
        assert h["auditor.source.partition"] == str(src["partition"]).encode(), f"{where}: partition header"
        digest = rec.record["input_digest"]
        # the original bytes, or (when they would not fit) a reference that names their digest
        carried = hashlib.sha256(value).digest() == digest or digest.hex().encode() in value + b" ".join(
            v for _, v in headers if v is not None)
        assert carried, f"{where}: neither the original bytes nor a reference to their digest {digest.hex()}"
    missing = sorted(set(rejections) - named.keys())
    doubled = sorted(k for k, n in named.items() if n > 1)
    assert not missing, f"{len(missing)} rejection records without a dead letter, e.g. {missing[:5]}"
    assert not doubled, f"rejections dead-lettered more than once: {doubled[:5]}"


def assert_verify_passes(setup: Setup, file_copies: Iterable[Path] = ()) -> None:
    """`auditor verify` on each daemon's file copy (signed checkpoints); and on the audit topic when
    the daemon writes its checkpoint topic (without it kafka:// is rightly 'unsigned')."""
    keys = setup.keys_dir
    for trail in file_copies:
        r = run_auditor("verify", str(trail), "--pubkey", str(keys / "signing.pub"))
        assert r.returncode == 0, f"auditor verify {trail} exit {r.returncode}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    md = AdminClient({"bootstrap.servers": setup.bootstrap}).list_topics(timeout=30)
    if f"{setup.audit}.checkpoints" in md.topics:
        r = run_auditor("verify", f"kafka://{setup.bootstrap}/{setup.audit}", "--pubkey",
                        str(keys / "signing.pub"))
        assert r.returncode == 0, f"auditor verify kafka:// exit {r.returncode}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"


def run_auditor(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    return subprocess.run([sys.executable, "-m", "auditor", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False, cwd=REPO.parent)


# ---------------------------------------------------------------- daemons, supervised

class Daemon(DaemonProcess):
    """daemonkit's daemon subprocess, run in the setup's work directory, with what a supervisor asks:
    is it alive, send it a signal; ``get`` answers (0, reason) when nothing listens."""

    start_timeout = 90.0  # the fault suite's machine is loaded by brokers that are being killed

    def __init__(self, setup: Setup, instance_id: str, env: dict[str, str] | None = None) -> None:
        super().__init__(setup, instance_id, env, cwd=setup.work)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str) -> tuple[int, str]:
        try:
            return super().get(path)
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)


class Supervisor:
    """An orchestrator for one instance id: restarts the daemon whenever it exits by itself
    (never after the test stopped it), and records every exit code it saw."""

    def __init__(self, setup: Setup, instance_id: str, hook: dict[str, str] | None = None) -> None:
        self.setup, self.instance_id = setup, instance_id
        #: each instance keeps its own file copy (two processes cannot share one trail directory)
        self.trail_dir = setup.work / f"trail-{instance_id}" if setup.trail_dir is not None else None
        self.env = {"AUDITOR_TRAIL_DIR": str(self.trail_dir)} if self.trail_dir is not None else {}
        self.exits: list[int] = []
        self.generations: list[Daemon] = []
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.current = self._spawn({**self.env, **(hook or {})})
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{instance_id}", daemon=True)
        self._thread.start()

    def _spawn(self, env: dict[str, str]) -> Daemon:
        d = Daemon(self.setup, self.instance_id, env)
        self.generations.append(d)
        return d

    def _watch(self) -> None:
        while not self._halt.wait(0.2):
            with self._lock:
                code = self.current.proc.poll()
                if code is None or self._halt.is_set():
                    continue
                time.sleep(0.5)  # the back-off of an orchestrator
                self.current = self._spawn(self.env)  # the test hook acts only in the first generation
                self.exits.append(code)  # after the new generation is current: waiters see both

    def release(self) -> None:
        """Stop restarting (the test stops or kills the current process itself)."""
        self._halt.set()
        self._thread.join(5)

    def stop(self, within: float) -> int:
        """SIGTERM the current daemon; it must exit within ``within`` seconds."""
        self.release()
        d = self.current
        d.signal(signal.SIGCONT)
        d.signal(signal.SIGTERM)
        return d.wait_exit(within, "after SIGTERM")

    def kill_all(self) -> None:
        self.release()
        for d in self.generations:
            d.kill()

    def describe(self) -> str:
        return f"{self.instance_id}: exits {self.exits}; current {self.current.describe()}"

    def assert_exits_documented(self) -> None:
        bad = [c for c in self.exits if c not in RESTARTABLE]
        assert not bad, (f"{self.instance_id} exited with {bad} (documented restartable exits are "
                         f"{sorted(RESTARTABLE)}); logs of the generations that did:\n"
                         + "\n---\n".join(g.log_tail(15) for g in self.generations if g.proc.poll() in bad))


# ---------------------------------------------------------------- waiting for the audit to catch up

def committed_count(bootstrap: str, topic: str) -> int:
    """At least how many committed messages ``topic`` holds now (a lower bound while it is written)."""
    return len(read_committed(bootstrap, topic, timeout=10, lower_bound=True))


def wait_audited(setup: Setup, n: int, timeout: float, what: str, *,
                 describe: Callable[[], str] = lambda: "", progressing: bool = False) -> None:
    """Until the audit topic holds at least ``n`` committed records. ``progressing``: ``timeout`` bounds
    only how long the count may stay the same (a backlog drained at the machine's pace), not the wait."""
    seen: list[Any] = [0, ""]

    def enough() -> bool:
        try:
            seen[0] = committed_count(setup.bootstrap, setup.audit)
        except AssertionError as exc:  # a partition that never reaches its end (transactions open all the time)
            seen[1] = f"; last count failed: {exc}"
            return False
        return bool(seen[0] >= n)

    def waited() -> str:
        return f"{n} committed audit records {what} (have {seen[0]}{seen[1]}) {describe()}"

    if progressing:
        wait_progressing(enough, lambda: seen[0], timeout, waited, interval=1.0)
    else:
        wait_until(enough, timeout, waited, interval=1.0)


def drain_and_stop(setup: Setup, feed: PacedFeeder, sup: Supervisor, within: float, *,
                   what: str = "after the feeder stopped", stop_within: float = 40.0) -> list[Sent]:
    """The feeder stops; everything it sent is audited within ``within`` seconds; the supervisor's
    current daemon stops on SIGTERM with exit 0 within ``stop_within``. Returns what was sent."""
    sent = feed.finish(timeout=120)
    wait_audited(setup, len(sent), within, what, describe=sup.describe)
    assert sup.stop(within=stop_within) == 0, sup.describe()
    return sent


def stable_committed(bootstrap: str, group: str, topic: str, partitions: int,
                     timeout: float = 150.0) -> dict[int, int]:
    """partition -> the group's committed offset, once no open transaction holds offsets for it.

    A daemon SIGKILLed after ``send_offsets_to_transaction`` leaves its transaction open, and the
    offset fetch (which asks for stable offsets, KIP-447) times out until the coordinator aborts it
    at the transaction timeout (60 s): "Failed to get committed offsets: Local: Timed out" is then
    the reader's impatience, not the daemon's fault. Asked again until ``timeout``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log_level": 3})
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return {tp.partition: tp.offset for tp in c.committed(tps, timeout=20)}
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._TIMED_OUT or time.monotonic() > deadline:
                    raise
    finally:
        c.close()


def reached(hook_dir: Path, step: str) -> bool:
    return (hook_dir / f"{step}.reached").exists()


# ---------------------------------------------------------------- poison and hostile inputs

YEAR_10000_MICROS = int((datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() + 1) * 1_000_000)
BEFORE_YEAR_1_MICROS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1_000_000) - 1


def with_occurred_at(good: bytes, micros: int) -> bytes:
    """A single-object message with its occurred_at (field 2, after event_id) replaced."""
    head, body = good[:10], good[10:]
    n, i, shift = 0, 0, 0
    while True:  # event_id's length varint
        b = body[i]
        n |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if not b & 0x80:
            break
    length = (n >> 1) ^ -(n & 1)
    at = i + length
    j = at
    while body[j] & 0x80:  # the old occurred_at varint
        j += 1
    return head + body[:at] + _varint(micros) + body[j + 1:]


def big_producer(bootstrap: str) -> Producer:
    """A producer that may send inputs up to 32 MB (the poison tests' topics allow it)."""
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                     "message.max.bytes": 32 * 1024 * 1024, "log_level": 3})


def send_raw(producer: Producer, topic: str, value: bytes | None, partition: int,
             headers: list[tuple[str, bytes | None]] | None = None) -> Sent:
    """Produce one message synchronously; return where it landed."""
    box: list[Any] = []

    def done(err: Any, msg: Any) -> None:
        box.append((err, msg))

    kwargs: dict[str, Any] = {"value": value, "partition": partition, "on_delivery": done}
    if headers:
        kwargs["headers"] = headers
    producer.produce(topic, **kwargs)
    deadline = time.monotonic() + 60
    while not box:
        assert time.monotonic() < deadline, f"no delivery report for a {len(value or b'')}-byte message in 60s"
        producer.poll(0.1)
    err, msg = box[0]
    assert err is None, f"could not produce a {len(value or b'')}-byte input: {err}"
    return Sent(msg.partition(), msg.offset(), value)


#: how long a partition may take to get past one poison message (one batch, or a bounded split)
POISON_S = 90


def valid_events(n: int, seed: int) -> list[Event]:
    return [e for e in mixed_events(n * 2, seed=seed) if isinstance(e, Event)][:n]


def mid_stream(setup: Setup, poison: list[tuple[bytes | None, list[tuple[str, bytes | None]] | None]],
                seed: int) -> tuple[list[Sent], list[Sent]]:
    """100 valid events, the poison messages, 100 valid events, all on partition 0."""
    producer = big_producer(setup.bootstrap)
    sent: list[Sent] = []
    bad: list[Sent] = []
    before, after = valid_events(100, seed), valid_events(100, seed + 1)
    for e in before:
        sent.append(send_raw(producer, setup.events, encode(e), 0))
    for value, headers in poison:
        s = send_raw(producer, setup.events, value, 0, headers)
        sent.append(s)
        bad.append(s)
    for e in after:
        sent.append(send_raw(producer, setup.events, encode(e), 0))
    return sent, bad


def healthy_through(sup: Supervisor, setup: Setup, n: int, what: str) -> None:
    """The audit reaches n records within POISON_S while the daemon stays up (no exit at all)."""
    wait_audited(setup, n, POISON_S, what, describe=sup.describe)
    assert sup.exits == [], f"the daemon exited on poison input: {sup.describe()}"
    assert sup.current.get("/healthz")[0] == 200, sup.describe()
    assert sup.current.get("/readyz")[0] == 200, sup.describe()


def configure(setup: Setup, changes: dict[str, Any]) -> None:
    """Merge ``changes`` into the setup's YAML config (nested mappings merge)."""
    import yaml

    doc = yaml.safe_load(setup.config_path.read_text())

    def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    merge(doc, changes)
    setup.config_path.write_text(yaml.safe_dump(doc))


def endless(seed: int) -> Iterable[Any]:
    """The mixed stream of daemonkit (valid, violating and some malformed inputs), never exhausted."""
    import itertools

    return itertools.cycle(mixed_events(3000, seed=seed))


# ---------------------------------------------------------------- the daemon killed or frozen at a hook step

def _hooked(kafka_bootstrap: str, tmp_path: Path, seed: int, rate: int, batch_max_events: int = 200
            ) -> tuple[Setup, Path, Feeder, Iterator[Any], PacedFeeder]:
    """The setup both hook scenarios run in (3 partitions, a file copy, batches of 200), the hook
    directory, and a paced feeder over ``endless(seed)`` (not started)."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=True, batch_max_events=batch_max_events)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    feeder, items = Feeder(kafka_bootstrap, setup.events), iter(endless(seed))
    return setup, hooks, feeder, items, PacedFeeder(feeder, items, rate=rate)


def sigkill_at_hook_loses_and_duplicates_nothing(kafka_bootstrap: str, tmp_path: Path, step: str, *,
                                                 instance_id: str, seed: int, rate: int, reaching: str,
                                                 backlog: int = 0, batch_max_events: int = 200) -> None:
    """AUDITOR_TEST_HOOK ``<step>:kill:3``: the daemon is SIGKILLed the 3rd time it reaches ``step``
    while events flow at ``rate``/s (after ``backlog`` events sent at once, when not 0); the supervisor
    restarts it, the restarted daemon audits, then the whole trail is checked. ``reaching`` says what
    the daemon is waited for at the hook ("the daemon to <reaching>")."""
    setup, hooks, feeder, items, feed = _hooked(kafka_bootstrap, tmp_path, seed, rate, batch_max_events)
    sup = Supervisor(setup, instance_id, {"AUDITOR_TEST_HOOK": f"{step}:kill:3", "AUDITOR_TEST_HOOK_DIR": str(hooks)})
    try:
        sup.current.wait_ready(90)
        if backlog:
            feeder.send_all(islice(items, backlog))
        feed.start()
        wait_until(lambda: reached(hooks, step), 60, lambda: f"the daemon to {reaching}: {sup.describe()}")
        wait_until(lambda: bool(sup.exits), 30, lambda: f"the hooked daemon to die: {sup.describe()}")
        assert sup.exits[0] == -signal.SIGKILL, f"the hook did not SIGKILL the daemon: {sup.describe()}"
        sup.current.wait_ready(90)
        before = committed_count(setup.bootstrap, setup.audit)
        wait_audited(setup, before + 300, 90, "from the restarted daemon", describe=sup.describe)
        assert feed.flowing, "the feeder stopped before the restarted daemon audited anything"
        sent = drain_and_stop(setup, feed, sup, 120, stop_within=30)
        assert sup.exits[1:] == [], f"the restarted daemon exited by itself: {sup.describe()}"
    finally:
        feed.halt.set()
        sup.kill_all()
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[sup.trail_dir])


def zombie_frozen_at_hook_does_not_fork_the_chain(kafka_bootstrap: str, tmp_path: Path, step: str, *,
                                                  instance_id: str, seed: int, rate: int, freezing: str,
                                                  backlog: int = 0, batch_max_events: int = 200) -> None:
    """AUDITOR_TEST_HOOK ``<step>:stop:3``: A (``<instance_id>-a``) freezes the 3rd time it reaches
    ``step`` while events flow at ``rate``/s (after ``backlog`` events sent at once, when not 0), for
    25 s, past the session timeout (10 s) and within the transaction timeout (60 s); B takes its
    partitions; A wakes (SIGCONT); both stop and the whole trail is checked. ``freezing`` says where
    A is waited for ("A to freeze <freezing>")."""
    setup, hooks, feeder, items, feed = _hooked(kafka_bootstrap, tmp_path, seed, rate, batch_max_events)
    a = Supervisor(setup, f"{instance_id}-a", {"AUDITOR_TEST_HOOK": f"{step}:stop:3",
                                               "AUDITOR_TEST_HOOK_DIR": str(hooks)})
    b: Supervisor | None = None
    try:
        a.current.wait_ready(90)
        if backlog:
            feeder.send_all(islice(items, backlog))
        feed.start()
        wait_until(lambda: reached(hooks, step), 60, lambda: f"A to freeze {freezing}: {a.describe()}")
        frozen_at = time.monotonic()
        b = Supervisor(setup, f"{instance_id}-b")
        b.current.wait_ready(90)  # B is assigned A's partitions once A's session (10 s) has expired
        wait_until(lambda: time.monotonic() - frozen_at > 25, 40, "A frozen for 25 s (> session timeout)")
        assert a.current.alive(), f"A died while frozen: {a.describe()}"
        a.current.signal(signal.SIGCONT)  # the zombie wakes and commits (or aborts) its open transaction
        time.sleep(8)
        assert feed.flowing
        sent = feed.finish()
        wait_audited(setup, len(sent), 150, "after the zombie woke",
                     describe=lambda: f"{a.describe()}\n{b.describe() if b else ''}")
        for sup in (a, b):
            sup.release()
            if sup.current.alive():
                assert sup.stop(within=30) == 0, sup.describe()
            sup.assert_exits_documented()
    finally:
        feed.halt.set()
        a.kill_all()
        if b is not None:
            b.kill_all()
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[a.trail_dir, b.trail_dir])
