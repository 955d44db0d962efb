"""attr: what the restore does about a hanging transaction of ours beyond attx's case, with stand-ins
(no broker; tests/faults/test_attr_hanging.py makes each case on a real broker).

- a process killed or fenced inside the abort of a hanging transaction: the next process finds the
  records aborted (by its init_transactions), no transaction open, the chain behind the committed
  offset, and nothing in its memory: the proof that the inputs were audited only in an aborted
  transaction is read from the log;
- pending offsets of ours hanging on the group's offsets partition (gap a): the committed-offset fetch
  never becomes stable; past any transaction's lifetime they are aborted from our producer;
- the producer fenced inside that abort: the daemon exits (Fatal), not a zombie member of the group.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import auditor.stream.ownership as ownership_mod
from auditor.stream.chainrestore import Written
from auditor.stream.commit import Fatal
from auditor.stream.ownership import Ownership
from tests.unit.stream.test_ownership_hanging import TOPIC, _Broker, _ownership, _tick


def test_records_aborted_by_an_earlier_process_are_audited_again(monkeypatch):
    """No open transaction (the killed process's abort was finished by this one's init_transactions),
    chain ends at 224, group at 226, and the log holds the chain's records through seq 225 (input 225)
    past its visible end: audit again from 225. On main: paused for good."""
    broker = _Broker(stable=301, high=301, written=Written(offset=298, seq=225, source_offset=225))
    own, consumer, producer, clock = _ownership(monkeypatch, broker)
    for _ in range(5):
        _tick(own, clock, 2)
    assert own.restored() == {(TOPIC, 0)}, own.states[(TOPIC, 0)].reason
    assert consumer.sought == [225] and producer.calls == []


@pytest.mark.parametrize("written", [
    None,  # nothing of the chain past its end: someone moved the group's offset
    Written(offset=298, seq=224, source_offset=224),  # the visible head itself
    Written(offset=298, seq=225, source_offset=224),  # not the input before the committed offset
    Written(offset=301, seq=225, source_offset=225),  # at or past the last stable offset: not proven aborted
])
def test_no_proof_in_the_log_leaves_the_partition_paused(monkeypatch, written):
    broker = _Broker(stable=301, high=301, written=written)
    own, consumer, producer, clock = _ownership(monkeypatch, broker)
    for _ in range(60):
        _tick(own, clock, 2)
    assert own.restored() == frozenset() and consumer.sought == [] and producer.calls == []


class _Unstable:
    """The group's committed offset: the fetch times out while our pending offsets hang; an abort from
    our producer that sent offsets ends them (and the records with them)."""

    def __init__(self, own: Ownership, broker: _Broker, committed: int) -> None:
        self.own, self.broker, self.committed_offset, self.hanging = own, broker, committed, True
        self.sought: list[int] = []
        self.resumed: list[Any] = []

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.hanging:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        return [TopicPartition(tp.topic, tp.partition, self.committed_offset) for tp in tps]

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def seek(self, tp: TopicPartition) -> None:
        self.sought.append(tp.offset)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.resumed += tps


def test_pending_offsets_of_ours_hanging_are_aborted_with_the_outputs(monkeypatch):
    """Gap (a): a daemon owning one partition, its pending offsets (226) and records hanging. Within a
    transaction's lifetime it waits; then one transaction of our producer touches the outputs, sends
    an offset (the group's offsets partition joins it) and aborts; the fetch then answers 224 (the
    last committed) and the chain, its hidden records aborted too, agrees. On main: waits for ever."""
    broker = _Broker(stable=298, high=299)
    own, _, producer, clock = _ownership(monkeypatch, broker)
    unstable = _Unstable(own, broker, committed=225)
    own.consumer = unstable
    monkeypatch.setattr(Ownership, "_last_committed", lambda self, key: 225)
    sent: list[Any] = []

    def send_offsets(tps: list[TopicPartition], metadata: Any, timeout: float) -> None:
        sent.append(([(tp.topic, tp.partition, tp.offset) for tp in tps], metadata))

    def abort(timeout: float) -> None:
        producer.calls.append("abort")
        if sent:
            unstable.hanging = False
        broker.high += 7
        broker.stable = broker.high

    producer.send_offsets_to_transaction = send_offsets  # type: ignore[attr-defined]
    producer.abort_transaction = abort  # type: ignore[method-assign]
    for _ in range(40):  # 80 s < 60 s + 30 s
        _tick(own, clock, 2)
    assert producer.calls == [] and own.restored() == frozenset()
    for _ in range(10):
        _tick(own, clock, 2)
    assert producer.calls.count("abort") == 1 and sent == [([(TOPIC, 0, 225)], "group-metadata")]
    assert (own.cfg.topics.violations, 1) in producer.calls and (own.cfg.topics.dead_letter, 0) in producer.calls
    assert own.restored() == {(TOPIC, 0)}, own.states[(TOPIC, 0)].reason
    assert unstable.sought == [225]


def test_pending_offsets_of_another_producer_are_aborted_once_per_lifetime(monkeypatch):
    broker = _Broker(stable=298, high=299)
    own, _, producer, clock = _ownership(monkeypatch, broker)
    own.consumer = _Unstable(own, broker, committed=225)
    monkeypatch.setattr(Ownership, "_last_committed", lambda self, key: 225)
    producer.send_offsets_to_transaction = lambda tps, metadata, timeout: None  # type: ignore[attr-defined]
    for _ in range(100):  # 200 s: one abort at ~90 s, the next not before ~180 s
        _tick(own, clock, 2)
    assert producer.calls.count("abort") == 2
    reason = own.states[(TOPIC, 0)].reason or ""
    assert "hanging" in reason and own.restored() == frozenset(), reason


def test_a_producer_fenced_inside_the_abort_stops_the_daemon(monkeypatch):
    """A process of the same instance id took over while this one was frozen inside the abort: the
    abort raises _FENCED (fatal). On main the partition was only paused again and the fenced process
    stayed in the group (seen on the real broker: it rejoined, ready, with a producer that can never
    commit)."""
    broker = _Broker()
    own, _, producer, clock = _ownership(monkeypatch, broker)

    def fenced(timeout: float) -> None:
        err = KafkaError(KafkaError._FENCED, "Failed to end transaction: fenced", fatal=True)
        raise KafkaException(err)

    producer.abort_transaction = fenced  # type: ignore[method-assign]
    with pytest.raises(Fatal) as caught:
        for _ in range(60):
            _tick(own, clock, 2)
    assert caught.value.fenced


def test_the_hook_step_acts_between_the_messages_and_the_abort(monkeypatch):
    monkeypatch.setenv("AUDITOR_TEST_HOOK", "in_close_hanging:stop")
    seen: list[list[Any]] = []
    monkeypatch.setattr(ownership_mod.TestHook, "_act", lambda self, step, action: seen.append(list(calls)))
    broker = _Broker()
    own, _, producer, clock = _ownership(monkeypatch, broker)
    calls = producer.calls
    for _ in range(50):
        _tick(own, clock, 2)
    assert seen and seen[0][-1] == "flush" and "abort" not in seen[0]
