"""batch.pipeline without a broker: the daemon's real step() with stand-ins for the two clients.

The main thread processes batch N+1 while batch N's send_offsets_to_transaction + commit_transaction
run on the commit worker. What must hold (auditor/stream/runner.py, commit.py): N+1 chains on N's
working heads but its transaction begins only once N committed; if N aborts, N+1 is dropped and
both are read again from N's start; heads advance only up to the batch that committed; a revoke
inside consume() waits for the in-flight transaction; a fatal error on the worker exits 3.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry
from streamkit import TOPIC, Clock, StubMessage, compliant, processor, wire

from auditor.config import load_config
from auditor.exitcodes import ExitCode
from auditor.metrics import build_metrics
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.commit import BatchCommit
from auditor.stream.ownership import PartitionState
from auditor.stream.runner import Daemon
from auditor.stream.watchdog import Watchdog
from auditor.trail.keys import KeyRing
from auditor.trail.record import SourceRef

ABORTABLE = KafkaError(KafkaError._TIMED_OUT, "commit timed out", txn_requires_abort=True)
FENCED = KafkaError(KafkaError._FENCED, "Producer attempted an operation with an old epoch", fatal=True)


class Msg(StubMessage):
    def error(self) -> None:
        return None


class Consumer:
    """A log per partition and a position; consume() reads from the positions, seek() moves them.
    ``during_consume`` runs inside the next consume() call (where librdkafka runs rebalance callbacks)."""

    def __init__(self, logs: dict[int, int]) -> None:
        self.logs = {p: [Msg(TOPIC, p, o, wire(compliant("ipasar", p * 1000 + o))) for o in range(n)]
                     for p, n in logs.items()}
        self.position = dict.fromkeys(logs, 0)
        self.seeks: list[tuple[int, int]] = []
        self.during_consume: Callable[[], None] | None = None

    def consume(self, n: int, timeout: float) -> list[Msg]:
        if self.during_consume is not None:
            hook, self.during_consume = self.during_consume, None
            hook()
        out: list[Msg] = []
        for p in sorted(self.logs):
            while len(out) < n and self.position[p] < len(self.logs[p]):
                out.append(self.logs[p][self.position[p]])
                self.position[p] += 1
        if not out and timeout > 0:
            time.sleep(timeout)  # librdkafka waits that long for a message that does not come
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.position[tp.partition] = tp.offset

    def consumer_group_metadata(self) -> object:
        return object()

    def pause(self, tps: Any) -> None: ...
    def resume(self, tps: Any) -> None: ...
    def close(self) -> None: ...


class Producer:
    """Transactions in memory. ``fail[n]``: the error the nth commit_transaction raises;
    ``gate[n]``: an event the nth send_offsets_to_transaction waits for (a slow broker)."""

    def __init__(self) -> None:
        self.n = 0
        self.open: list[tuple[str, bytes]] = []
        self.offsets: list[TopicPartition] = []
        #: (transaction number, the offsets it committed, its audit records' (partition, offset) sources)
        self.committed: list[tuple[int, dict[int, int], list[bytes]]] = []
        self.fail: dict[int, KafkaError] = {}
        self.gate: dict[int, threading.Event] = {}
        self.events: list[str] = []
        self.lock = threading.Lock()

    def begin_transaction(self) -> None:
        with self.lock:
            self.n += 1
            self.open, self.offsets = [], []
            self.events.append(f"begin {self.n}")

    def produce(self, topic: str, value: bytes, key: Any, partition: int, on_delivery: Any = None,
                headers: Any = None) -> None:
        self.open.append((topic, value))

    def send_offsets_to_transaction(self, tps: list[TopicPartition], metadata: Any, timeout: float) -> None:
        gate = self.gate.get(self.n)
        if gate is not None:
            assert gate.wait(10), "the test never opened the gate"
        self.offsets = list(tps)

    def commit_transaction(self, timeout: float) -> None:
        err = self.fail.get(self.n)
        if err is not None:
            raise KafkaException(err)
        with self.lock:
            self.committed.append((self.n, {tp.partition: tp.offset for tp in self.offsets},
                                   [v for t, v in self.open if t == "audit"]))
            self.events.append(f"commit {self.n}")

    def abort_transaction(self, timeout: float) -> None:
        self.events.append(f"abort {self.n}")

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys", "example.com/auditor")


def daemon(keys: KeyRing, logs: dict[int, int], max_events: int = 2, pipeline: bool = True, max_ms: int = 1
           ) -> tuple[Daemon, Consumer, Producer]:
    cfg = load_config(env={"AUDITOR_BATCH_MAX_EVENTS": str(max_events), "AUDITOR_BATCH_MAX_MS": str(max_ms),
                           "AUDITOR_BATCH_PIPELINE": "true" if pipeline else "false"})
    p = processor()
    cp = Checkpointer(keys.signer, keys.verifier, "audit.checkpoints", audit_partitions=3, partitions=3)
    d = Daemon(cfg, p, build_metrics(CollectorRegistry()), checkpoints=cp)
    consumer, producer = Consumer(logs), Producer()
    d.consumer, d.producer = consumer, producer  # type: ignore[assignment]
    d.committer = BatchCommit(producer, consumer, p, d.watchdog, None, None, d.metrics)  # type: ignore[arg-type]
    d.committer.checkpoints = cp
    d.ownership.attach(consumer, None)  # type: ignore[arg-type]
    for part in logs:
        d.ownership.states[(TOPIC, part)] = PartitionState(since=0.0, restored=True)
        p.set_head(f"{TOPIC}/{part}", None)
    return d, consumer, producer


def records(producer: Producer) -> list[tuple[str, int, int]]:
    """(chain, seq, source offset) of every committed audit record, in commit order."""
    from auditor.trail.canonical import iter_frames, record_from_bytes

    out = []
    for _, _, values in producer.committed:
        for v in values:
            (frame,) = iter_frames(v, 1)
            src: SourceRef = record_from_bytes(v).source
            out.append((frame.chain_id, frame.seq, src.offset))
    return out


def run_until_idle(d: Daemon, consumer: Consumer, steps: int = 40) -> None:
    for _ in range(steps):
        d.step()
        if all(consumer.position[p] == len(log) for p, log in consumer.logs.items()) and d._inflight is None \
                and d._aborted is None and not d.intake.buffers:
            break
    d._drain()


def test_an_aborted_transaction_drops_the_batch_processed_after_it_and_rewinds_to_its_start(keys):
    d, consumer, producer = daemon(keys, {0: 6})
    producer.fail[1] = ABORTABLE           # batch N = offsets 0-1: its commit fails on the worker
    d.step()                               # N processed, begun, handed to the worker
    assert d._inflight is not None and producer.committed == []
    d.step()                               # N+1 (2-3) processed after N's heads; N's abort seen
    assert consumer.seeks == [(0, 0)], "rewound to N's start (N+1's start is after it, same partition)"
    assert d._inflight is None and producer.n == 1, "N+1's transaction was never begun"
    assert d.processor.heads["events/0"].size == 0 and d.processor._working == {}, "N+1's heads chained on N's"
    run_until_idle(d, consumer)
    got = records(producer)
    assert [(c, s, o) for c, s, o in got] == [("events/0", i, i) for i in range(6)], \
        "every offset audited once, in order, seqs from 0 (nothing of the dropped processing)"
    assert [offs for _, offs, _ in producer.committed][-1] == {0: 6}
    assert d.processor.heads["events/0"].size == 6


def test_an_abort_rewinds_each_partition_to_its_own_first_offset(keys):
    d, consumer, producer = daemon(keys, {0: 2, 1: 4}, max_events=2)
    producer.fail[1] = ABORTABLE  # N = partition 0's two messages; N+1 = partition 1's first two
    d.step()
    d.step()
    assert sorted(consumer.seeks) == [(0, 0), (1, 0)], "N+1's partition too goes back to where N+1 began"
    run_until_idle(d, consumer)
    assert sorted((c, s, o) for c, s, o in records(producer)) == \
        [("events/0", 0, 0), ("events/0", 1, 1)] + [("events/1", i, i) for i in range(4)]


def test_heads_advance_up_to_the_committed_batch_while_the_next_is_in_flight(keys):
    d, consumer, producer = daemon(keys, {0: 6})
    gate = producer.gate[2] = threading.Event()  # N+1's send_offsets waits
    producer.fail[2] = ABORTABLE                 # and then N+1 aborts
    d.step()   # N (0-1) to the worker
    d.step()   # N+1 (2-3) processed; N committed; N+1 begun and handed to the worker (waiting at the gate)
    assert [n for n, _, _ in producer.committed] == [1]
    assert d.processor.heads["events/0"].size == 2, "current heads: up to N, not N+1"
    assert d.processor._working["events/0"].size == 4, "N+1's working heads kept for the batch after it"
    assert d.checkpoints.logs["events/0"].head.size == 4, "N+1's checkpoint sealed (after N's committed)"
    gate.set()
    d.step()   # N+2 (4-5) processed after N+1's heads; N+1's abort seen: N+2 dropped, back to 2
    assert consumer.seeks[-1] == (0, 2)
    assert d.processor.heads["events/0"].size == 2 and d.checkpoints.logs["events/0"].head.size == 2
    run_until_idle(d, consumer)
    assert records(producer) == [("events/0", i, i) for i in range(6)]


def test_a_revoke_inside_consume_waits_for_the_in_flight_transaction_before_giving_the_partition_up(keys):
    d, consumer, producer = daemon(keys, {0: 4, 1: 4}, max_events=2)
    gate = producer.gate[1] = threading.Event()
    d.step()   # N = offset 0 of each partition (shared fairly), in flight, its send_offsets held at the gate
    timer = threading.Timer(0.3, gate.set)
    seen: list[str] = []

    def revoke() -> None:
        timer.start()
        d.ownership.on_revoke(consumer, [TopicPartition(TOPIC, 0)])
        seen.extend(producer.events)

    consumer.during_consume = revoke
    d.step()
    assert seen[-1] == "commit 1", f"on_revoke returned before N committed: {seen}"
    assert "events/0" not in d.processor.heads, "the revoked chain is forgotten, not re-added by N's commit"
    d._drain()
    offsets = [offs for _, offs, _ in producer.committed]
    assert 0 in offsets[0] and all(0 not in o for o in offsets[1:]), \
        "nothing of the revoked partition is committed after the revoke"


def test_a_fatal_error_on_the_commit_worker_exits_3_and_commits_nothing_after_it(keys):
    d, consumer, producer = daemon(keys, {0: 8})
    producer.fail[2] = FENCED

    def start() -> None:  # the clients are already the stand-ins
        pass

    d.start = start  # type: ignore[method-assign]
    assert d.run() == ExitCode.BROKER == 3
    assert d.fatal and [n for n, _, _ in producer.committed] == [1]
    assert "begin 3" not in producer.events


def test_shutdown_finishes_the_in_flight_transaction_before_close(keys):
    d, consumer, producer = daemon(keys, {0: 6})
    gate = producer.gate[3] = threading.Event()
    steps = {"n": 0}

    def step() -> None:
        Daemon.step(d)
        steps["n"] += 1
        if steps["n"] == 3:  # N+2 is on the worker, held at the gate
            d.request_stop()
            threading.Timer(0.3, gate.set).start()

    d.start = lambda: None  # type: ignore[method-assign]
    d.step = step  # type: ignore[method-assign]
    assert d.run() == 0
    assert [n for n, _, _ in producer.committed] == [1, 2, 3], "the last transaction committed before close"
    assert d.processor.heads["events/0"].size == 6 and d._inflight is None


def test_with_nothing_more_to_consume_the_in_flight_batch_settles_when_it_commits_not_after_max_ms(keys):
    d, consumer, producer = daemon(keys, {0: 2}, max_ms=3000)
    gate = producer.gate[1] = threading.Event()
    d.step()  # the only batch, on the worker
    threading.Timer(0.2, gate.set).start()
    t0 = time.monotonic()
    d.step()  # nothing to consume: polls while the transaction runs, then settles it
    took = time.monotonic() - t0
    assert d._inflight is None and d.processor.heads["events/0"].size == 2
    assert 0.15 < took < 1.5, f"settled {took:.2f}s after the poll began (batch.max_ms is 3 s)"


def test_while_a_batch_commits_the_next_gathers_what_arrives_until_it_committed(keys):
    """Not cut at the first messages that arrive: a batch taken early would be small (more, smaller
    transactions) and the events arriving after it would wait for two commits."""
    d, consumer, producer = daemon(keys, {0: 4}, max_events=10, max_ms=3000)
    gate = producer.gate[1] = threading.Event()
    d.step()  # 0-3 on the worker, held at the gate

    def arrive(offsets: range) -> None:
        consumer.logs[0].extend(Msg(TOPIC, 0, o, wire(compliant("ipasar", o))) for o in offsets)

    arrive(range(4, 6))
    threading.Timer(0.1, arrive, (range(6, 8),)).start()
    threading.Timer(0.3, gate.set).start()
    d.step()  # gathers 4-7 until the gate opens and 0-3 committed, then begins 4-7
    d._drain()
    assert [offs for _, offs, _ in producer.committed] == [{0: 4}, {0: 8}]


def test_a_transaction_already_committed_is_settled_before_the_next_batch_is_processed(keys):
    """Processing overlaps only a commit still running: one already over is settled first (heads,
    file copy, metrics: the end-to-end latency is observed then, not after the next batch)."""
    d, consumer, producer = daemon(keys, {0: 4})
    order: list[str] = []
    process = d.processor.process

    def traced(batch):  # type: ignore[no-untyped-def]
        order.append("process")
        return process(batch)

    d.processor.process = traced  # type: ignore[method-assign]
    d.on_batch = lambda result: order.append("settled")
    d.step()
    assert d._inflight is not None and d._inflight.future is not None
    d._inflight.future.result(10)
    d.step()
    assert order == ["process", "settled", "process"]


def test_switched_off_the_daemon_commits_each_batch_before_it_consumes_the_next(keys):
    d, consumer, producer = daemon(keys, {0: 4}, pipeline=False)
    d.pipelined = False
    d.step()
    assert d._inflight is None and [n for n, _, _ in producer.committed] == [1]


# ---------------------------------------------------------------- the watchdog sees the worker's calls

def test_the_watchdog_judges_a_call_on_the_commit_worker_while_the_main_thread_makes_short_calls():
    clock = Clock()
    w = Watchdog(stall_timeout_s=300, call_margin_s=10, shutdown_timeout_s=30, fire=lambda r: None, clock=clock)
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        with w.call("commit_transaction", 60):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert inside.wait(10)
        with w.call("consume", 5):  # the main thread's call returns: the worker's is still in progress
            clock.now += 1
        clock.now += 70
        assert "commit_transaction" in (w.overdue() or ""), "the worker's call outlived its timeout + margin"
    finally:
        release.set()
        t.join(10)
    assert w.current is None


def test_a_thread_waiting_for_the_worker_inside_a_call_is_in_no_call_meanwhile():
    clock = Clock()
    w = Watchdog(stall_timeout_s=300, call_margin_s=10, shutdown_timeout_s=30, fire=lambda r: None, clock=clock)
    w.beat()
    with w.call("consume", 5):
        with w.outside_call():  # on_revoke waits for the in-flight commit
            assert w.current is None
            clock.now += 40
            assert w.overdue() is None
        assert w.current is not None and w.current.started == clock.now, "consume counts again from now"
        clock.now += 1
        assert w.overdue() is None
    clock.now += 300
    assert "no progress" in (w.overdue() or "")


def test_the_worker_thread_runs_one_job_at_a_time_and_hands_back_errors():
    from auditor.stream.commit import _Worker

    w = _Worker()
    try:
        order: list[int] = []

        def slow() -> None:
            time.sleep(0.05)
            order.append(1)

        f1 = w.submit(slow)
        f2 = w.submit(lambda: order.append(2))

        def boom() -> None:
            raise KafkaException(ABORTABLE)

        f3 = w.submit(boom)
        f1.result(5), f2.result(5)
        with pytest.raises(KafkaException):
            f3.result(5)
        assert order == [1, 2]
    finally:
        w.close()
