"""attx: a hanging transaction on the audit partition (the broker completed a transaction of ours
without writing its markers there; Kafka 4.3.1's coordinator skips, as "likely deleted", every
partition whose leader it cannot find, as right after a broker restart) hides the chain's last records
while the group's committed offset is past them. Seen in test_broker_sigkill_and_restart: events/0
paused for good, "chain ends at source offset 224 but the group committed offset 226".

The restore must not wait for ever, nor continue from the committed offset (the hidden records
would be lost, or exposed later by our next commit marker next to their successors: a fork). Past
any transaction's lifetime it aborts the transaction from its own producer (the ABORT marker closes
what the producer left open there) and audits again from the chain's visible end. A stand-in
consumer, admin answers and producer; no broker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

import auditor.stream.ownership as ownership_mod
from auditor.config import load_config
from auditor.metrics import build_metrics
from auditor.stream.chainrestore import Written
from auditor.stream.checkpointing import Restored as SignedRestore
from auditor.stream.ownership import Ownership
from auditor.stream.watchdog import Watchdog
from auditor.trail.chain import ChainHead
from tests.unit.stream.streamkit import Clock, processor

TOPIC = "events"
CHAIN = "events/0"


class _Consumer:
    def __init__(self, committed: int) -> None:
        self.committed_offset = committed
        self.sought: list[int] = []
        self.resumed: list[tuple[str, int]] = []

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        pass

    def pause(self, partitions: list[TopicPartition]) -> None:
        pass

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.committed_offset) for tp in tps]

    def seek(self, tp: TopicPartition) -> None:
        self.sought.append(tp.offset)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.resumed += [(tp.topic, tp.partition) for tp in tps]


@dataclass
class _Log:
    head: ChainHead


@dataclass
class _Checkpoints:
    topic: str = "audit.checkpoints"
    partitions: int = 3
    adopted: list[Any] = field(default_factory=list)

    def adopt(self, log: Any) -> None:
        self.adopted.append(log)

    def forget(self, chains: object) -> None:
        pass


@dataclass
class _Broker:
    """The audit partition's last stable offset and high watermark; our producer's ABORT marker ends
    the hanging transaction when it is ours."""

    stable: int = 298
    high: int = 299
    ours: bool = True
    #: attr: the chain's last record in the log, aborted ones included (Ownership._last_written)
    written: Written | None = None
    #: attr: the partitions of the violations and dead-letter topics (the abort touches them too)
    outputs: int = 2


class _Admin:
    """list_topics: the violations and dead-letter topics with ``broker.outputs`` partitions each."""

    def __init__(self, broker: _Broker) -> None:
        self.broker = broker

    def list_topics(self, timeout: float) -> Any:
        from types import SimpleNamespace
        meta = SimpleNamespace(error=None, partitions={p: None for p in range(self.broker.outputs)})
        return SimpleNamespace(topics={"auditor.violations": meta, "auditor.dead-letter": meta})


class _Producer:
    def __init__(self, broker: _Broker) -> None:
        self.broker = broker
        self.calls: list[Any] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
        self.calls.append((topic, partition))

    def flush(self, timeout: float) -> int:
        self.calls.append("flush")
        return 0

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")
        if self.broker.ours:  # the marker closes the hanging transaction, and our own aborted messages
            self.broker.high += 3
            self.broker.stable = self.broker.high
            # what the log then holds past the chain's visible end: the aborted records up to seq 225
            self.broker.written = Written(offset=298, seq=225, source_offset=225)


def _ownership(monkeypatch: pytest.MonkeyPatch, broker: _Broker, *, chain_end: int = 224,
               committed: int = 226) -> tuple[Ownership, _Consumer, _Producer, Clock]:
    cfg = load_config(env={})  # transaction_timeout_ms 60 s, restore.settle_timeout_s 30 s
    metrics = build_metrics(CollectorRegistry())
    own = Ownership(cfg, processor(), metrics, Watchdog(300, 30, 30, lambda reason: None))
    clock = own.clock = Clock()
    consumer = _Consumer(committed)
    own.attach(consumer, _Admin(broker))  # type: ignore[arg-type]
    own.checkpoints = _Checkpoints()  # type: ignore[assignment]
    producer = own.producer = _Producer(broker)
    monkeypatch.setattr(ownership_mod, "stable_offsets", lambda admin, topic, p, timeout: (broker.stable, broker.high))
    monkeypatch.setattr(Ownership, "_checkpoints_hidden", lambda self, ap, st: None)
    monkeypatch.setattr(Ownership, "_last_written", lambda self, chain, ap: broker.written)
    head = ChainHead(CHAIN, chain_end + 1, b"h" * 32)
    monkeypatch.setattr(Ownership, "_restore_signed",
                        lambda self, chain, ap: SignedRestore(_Log(head), source_offset=chain_end))  # type: ignore[arg-type]
    own.on_assign(consumer, [TopicPartition(TOPIC, 0)])
    return own, consumer, producer, clock


def _tick(own: Ownership, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    own.restore_due()


def test_a_hanging_transaction_of_ours_is_aborted_and_the_hidden_inputs_audited_again(monkeypatch):
    broker = _Broker()
    own, consumer, producer, clock = _ownership(monkeypatch, broker)
    own.restore_due()
    for _ in range(40):  # 80 s: within any transaction's lifetime (60 s) plus the settle time (30 s)
        _tick(own, clock, 2)
    assert own.restored() == frozenset() and producer.calls == [], "acted before the transaction could be hanging"
    for _ in range(10):
        _tick(own, clock, 2)
    outputs = [(t, p) for t in (own.cfg.topics.violations, own.cfg.topics.dead_letter) for p in (0, 1)]
    assert producer.calls == ["begin", (own.cfg.topics.audit, 0), ("audit.checkpoints", 0), *outputs, "flush", "abort"]
    assert own.restored() == {(TOPIC, 0)}, own.states[(TOPIC, 0)].reason
    assert consumer.sought == [225], "audits again from the chain's visible end, not the committed offset 226"
    assert consumer.resumed == [(TOPIC, 0)]


def test_a_hanging_transaction_of_another_producer_leaves_the_partition_paused(monkeypatch):
    broker = _Broker(ours=False)
    own, consumer, producer, clock = _ownership(monkeypatch, broker)
    for _ in range(120):
        _tick(own, clock, 2)
    assert producer.calls.count("abort") == 1, "one abort per hanging transaction, not one per retry"
    assert own.restored() == frozenset() and consumer.sought == []
    reason = own.states[(TOPIC, 0)].reason or ""
    assert "hanging transaction" in reason and "did not close it" in reason, reason


def test_a_chain_behind_the_committed_offset_with_no_open_transaction_is_not_audited_again(monkeypatch):
    """Nothing of ours hid the records: the restore does not guess (it stays paused, as before)."""
    broker = _Broker(stable=299, high=299)
    own, consumer, producer, clock = _ownership(monkeypatch, broker)
    for _ in range(120):
        _tick(own, clock, 2)
    assert producer.calls == [] and own.restored() == frozenset() and consumer.sought == []


def test_a_transaction_that_ends_in_time_is_waited_for(monkeypatch):
    """A previous owner's transaction (open, then committed within its lifetime) is not aborted."""
    broker = _Broker()
    own, consumer, producer, clock = _ownership(monkeypatch, broker)
    for _ in range(20):
        _tick(own, clock, 2)
    broker.stable = broker.high = 300  # it committed: the chain's last records became visible
    monkeypatch.setattr(Ownership, "_restore_signed", lambda self, chain, ap: SignedRestore(
        _Log(ChainHead(CHAIN, 226, b"h" * 32)), source_offset=225))  # type: ignore[arg-type]
    _tick(own, clock, 2)
    assert producer.calls == [] and own.restored() == {(TOPIC, 0)} and consumer.sought == [226]


class _HangingOffsets(_Consumer):
    """atx (partial markers): the group's committed-offset fetch times out while pending offsets of ours
    hang; a transaction of our producer that sent offsets ends them: committed (its offset after them),
    or aborted (the last committed offset stays)."""

    def __init__(self, committed: int) -> None:
        super().__init__(committed)
        self.hanging = True

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        from confluent_kafka import KafkaError, KafkaException

        if self.hanging:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        return super().committed(tps, timeout)

    def consumer_group_metadata(self) -> str:
        return "group-metadata"


def _hanging_offsets(monkeypatch: pytest.MonkeyPatch, broker: _Broker, last: int, chain_end: int
                     ) -> tuple[Ownership, _HangingOffsets, _Producer, Clock, list[Any]]:
    own, _, producer, clock = _ownership(monkeypatch, broker, chain_end=chain_end, committed=last)
    consumer = own.consumer = _HangingOffsets(last)
    monkeypatch.setattr(Ownership, "_last_committed", lambda self, key: last)
    sent: list[Any] = []

    def send_offsets(tps: list[TopicPartition], metadata: Any, timeout: float) -> None:
        producer.calls.append("send_offsets")
        sent.append([(tp.topic, tp.partition, tp.offset) for tp in tps])

    def commit(timeout: float) -> None:
        producer.calls.append("commit")
        consumer.hanging, consumer.committed_offset = False, sent[-1][0][2]

    def abort(timeout: float) -> None:
        producer.calls.append("abort")
        if sent:
            consumer.hanging = False  # ended aborted: the last committed offset stays

    producer.send_offsets_to_transaction = send_offsets  # type: ignore[attr-defined]
    producer.commit_transaction = commit  # type: ignore[attr-defined]
    producer.abort_transaction = abort  # type: ignore[method-assign]
    return own, consumer, producer, clock, sent


def test_hanging_offsets_of_a_transaction_whose_records_committed_are_committed_past_the_chain(monkeypatch):
    """Partial markers (made on a broker: tests/faults/test_atx_hanging_attacks.py, only the group's offsets
    partition put back): the transaction's records (inputs ..225) are committed and signed, its offsets
    (226) hang; the group's last committed offset is 200. Aborting them (main) left the chain ahead of
    the committed offset: "chain ends at source offset 225 but the group committed offset 200", paused
    for good. Now: a transaction that sends offset 226 and commits; then the chain and the offset agree."""
    broker = _Broker(stable=299, high=299)  # no transaction open on the audit partition
    own, consumer, producer, clock, sent = _hanging_offsets(monkeypatch, broker, last=200, chain_end=225)
    for _ in range(40):  # 80 s < 60 s + 30 s: a transaction that may still end by itself
        _tick(own, clock, 2)
    assert producer.calls == [] and own.restored() == frozenset()
    for _ in range(10):
        _tick(own, clock, 2)
    assert producer.calls == ["begin", "send_offsets", "commit"], "offsets only: no message of ours becomes visible"
    assert sent == [[(TOPIC, 0, 226)]]
    assert own.restored() == {(TOPIC, 0)}, own.states[(TOPIC, 0)].reason
    assert consumer.sought == [226]


@pytest.mark.parametrize("case", ["records hidden too", "chain not past the offset", "forged tail"])
def test_hanging_offsets_are_aborted_as_before_without_proof_that_their_records_committed(monkeypatch, case):
    broker = _Broker(stable=298 if case == "records hidden too" else 299, high=299)
    last = 226 if case == "chain not past the offset" else 200
    own, _, producer, clock, _ = _hanging_offsets(monkeypatch, broker, last=last, chain_end=225)
    if case == "forged tail":
        head = ChainHead(CHAIN, 226, b"h" * 32)
        monkeypatch.setattr(Ownership, "_restore_signed", lambda self, chain, ap: SignedRestore(
            _Log(head), source_offset=225, forged=True))  # type: ignore[arg-type]
    for _ in range(50):
        _tick(own, clock, 2)
    assert "commit" not in producer.calls and "abort" in producer.calls, producer.calls
