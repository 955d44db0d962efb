"""The chain restore reports its progress to the watchdog (atx, session 10).

A flooded audit partition made the takeover's "restore chain head" outlast its own timeout: it reads
the partition back until the chain's head record, and a flood after the head (forged records,
another chain's) is read through whole. On a broker, 200,000 forged records of another chain after
the head, the taking-over daemon in a cgroup of 7% of a core: exit 4 after 82 s ("restore chain head
has run 70s, past its own 40s timeout plus watchdog.call_margin_s=30s"), and so at every restart.
Now each window read back is progress for the call: its timeout bounds one window, not the partition.

Stand-ins: a clock that moves only when the test moves it, and a consumer (in place of
``chainrestore.Consumer``) whose every message costs the clock ``PER_MESSAGE`` seconds; the watchdog
is asked at every message whether it would fire."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition
from prometheus_client import CollectorRegistry

import auditor.stream.ownership as ownership_mod
from auditor.config import load_config
from auditor.metrics import build_metrics
from auditor.stream import chainrestore
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.ownership import Ownership
from auditor.stream.watchdog import Watchdog
from auditor.trail.keys import KeyRing
from tests.unit.stream.streamkit import Clock, processor

TOPIC = "events"
FLOOD = 20_000  # ten windows of the read back
PER_MESSAGE = 0.01  # 20 s a window, 200 s the flood: past 40 s + 30 s, each window well within it


# ---------------------------------------------------------------- the watchdog alone

def _watchdog(clock: Clock, fired: list[str]) -> Watchdog:
    return Watchdog(300, 30, 30, fired.append, clock=clock)


def test_a_call_that_reports_progress_is_judged_from_its_last_report():
    clock, fired = Clock(), []
    w = _watchdog(clock, fired)
    with w.call("restore chain head", 40):
        for _ in range(30):  # 600 s in all, a report every 20 s
            clock.now += 20
            assert w.overdue() is None
            w.progress()
        clock.now += 70
        assert w.overdue() is None, "70 s since the last report: within 40 s + 30 s"
        clock.now += 1
        reason = w.overdue()
    assert reason is not None and "restore chain head has run 671s, 71s since its last progress" in reason, reason


def test_without_reports_a_call_is_judged_from_its_start_as_before():
    clock, fired = Clock(), []
    w = _watchdog(clock, fired)
    with w.call("restore chain head", 40):
        clock.now += 71
        assert w.overdue() == ("the Kafka client call restore chain head has run 71s, past its own 40s timeout "
                               "plus watchdog.call_margin_s=30s")


def test_progress_is_no_beat_of_the_loop_and_no_progress_of_another_thread():
    clock, fired = Clock(), []
    w = _watchdog(clock, fired)
    w.progress()  # outside a call: nothing
    assert w.current is None
    clock.now += 200
    with w.call("restore chain head", 40):
        clock.now += 60
        w.progress()
        clock.now += 60
        w.progress()
    clock.now += 101  # the loop has not beaten since 421 s: the stall rule still counts from its last beat
    assert w.overdue() is not None and "no progress for 421s" in (w.overdue() or "")

    w2 = _watchdog(clock, fired)
    with w2.call("send_offsets_to_transaction", 10):
        t = threading.Thread(target=w2.progress)  # another thread's report is not this call's progress
        clock.now += 30
        t.start()
        t.join()
        clock.now += 11
        assert w2.overdue() is not None


# ---------------------------------------------------------------- the restore, through a flood

class _Msg:
    def __init__(self, offset: int, value: bytes | None, error: Any = None) -> None:
        self._offset, self._value, self._error = offset, value, error

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return None

    def headers(self) -> None:
        return None

    def error(self) -> Any:
        return self._error


class _Eof:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


class _Partitions:
    """The topics' messages (by topic name; one partition each), and what the watchdog said meanwhile."""

    def __init__(self, clock: Clock, watchdog: Watchdog, topics: dict[str, list[bytes]],
                 per_message: float = PER_MESSAGE) -> None:
        self.clock, self.watchdog, self.topics, self.per_message = clock, watchdog, topics, per_message
        self.reasons: list[str] = []
        self.read = 0

    def consumer(self, conf: dict[str, Any]) -> Any:
        partitions = self

        class Reader:
            topic, at = "", 0

            def assign(self, tps: list[TopicPartition]) -> None:
                self.topic, self.at = tps[0].topic, tps[0].offset

            def unassign(self) -> None:
                pass

            def poll(self, timeout: float) -> _Msg:
                values = partitions.topics.get(self.topic, [])
                if self.at >= len(values):
                    return _Msg(self.at, None, _Eof())
                partitions.clock.now += partitions.per_message
                partitions.read += 1
                reason = partitions.watchdog.overdue()
                if reason is not None:
                    partitions.reasons.append(reason)
                self.at += 1
                return _Msg(self.at - 1, values[self.at - 1])

            def get_watermark_offsets(self, tp: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
                return 0, len(partitions.topics.get(tp.topic, []))

            def close(self) -> None:
                pass

        return Reader()


class _GroupConsumer:
    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in tps]  # nothing committed yet

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        pass

    def pause(self, tps: list[TopicPartition]) -> None:
        pass

    def seek(self, tp: TopicPartition) -> None:
        pass

    def resume(self, tps: list[TopicPartition]) -> None:
        pass


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys", "example.com/auditor")


def test_the_takeover_restores_a_chain_through_a_flood_longer_than_the_calls_timeout(monkeypatch, keys):
    """Not a record of the flood is the chain's: the restore reads all of it back (10 windows, 200 s by
    the clock) and finds the chain new; the watchdog never fires on the way."""
    cfg = load_config(env={})  # watchdog.call_margin_s 30 s; the restore call's own timeout 40 s
    clock = Clock()
    watchdog = Watchdog(cfg.watchdog.stall_timeout_s, cfg.watchdog.call_margin_s, 30, lambda reason: None, clock=clock)
    own = Ownership(cfg, processor(), build_metrics(CollectorRegistry()), watchdog, clock=clock)
    own.checkpoints = Checkpointer(keys.signer, keys.verifier, cfg.checkpoint_topic)
    flood = [b"not a record %06d" % i for i in range(FLOOD)]
    partitions = _Partitions(clock, watchdog, {cfg.topics.audit: flood, cfg.checkpoint_topic: []})
    monkeypatch.setattr(chainrestore, "Consumer", partitions.consumer)
    monkeypatch.setattr(ownership_mod, "stable_offsets", lambda admin, topic, p, timeout: (FLOOD, FLOOD))
    monkeypatch.setattr(Ownership, "_checkpoints_hidden", lambda self, ap, st: None)
    consumer = _GroupConsumer()
    own.attach(consumer, object())  # type: ignore[arg-type]
    own.on_assign(consumer, [TopicPartition(TOPIC, 0)])

    own.restore_due()

    assert partitions.read >= FLOOD and clock.now - 1000 > 2 * (40 + cfg.watchdog.call_margin_s)
    assert partitions.reasons == [], partitions.reasons[0]
    assert own.restored() == {(TOPIC, 0)}, own.states[(TOPIC, 0)].reason


@pytest.mark.parametrize("reader", ["last_written", "read_unsigned_chain"])
def test_the_other_reads_of_a_whole_partition_report_each_window(monkeypatch, reader):
    clock = Clock()
    watchdog = Watchdog(300, 30, 30, lambda reason: None, clock=clock)
    partitions = _Partitions(clock, watchdog, {"audit": [b"not a record %06d" % i for i in range(FLOOD)]})
    monkeypatch.setattr(chainrestore, "Consumer", partitions.consumer)
    with watchdog.call(reader, 40):
        getattr(chainrestore, reader)({}, "audit", 0, "events/0", 10.0, watchdog.progress)
    assert partitions.read >= FLOOD and partitions.reasons == [], partitions.reasons[:1]


def test_a_window_that_takes_longer_than_the_call_may_still_fires(monkeypatch):
    """Progress is reported per window, not per message: one window past 40 s + 30 s is a stuck call."""
    clock = Clock()
    watchdog = Watchdog(300, 30, 30, lambda reason: None, clock=clock)
    partitions = _Partitions(clock, watchdog, {"audit": [b"x"] * 8000}, per_message=0.036)  # 72 s a window
    monkeypatch.setattr(chainrestore, "Consumer", partitions.consumer)
    with watchdog.call("read the chain's last record (read_uncommitted)", 40):
        chainrestore.last_written({}, "audit", 0, "events/0", 10.0, watchdog.progress)
    assert partitions.reasons, "a window of 72 s went unnoticed"


def test_several_flooded_partitions_restored_in_turn_are_no_stall(monkeypatch, keys):
    """Three partitions assigned at once, each chain read back through its own flood (200 s by the clock):
    restore_due restores them one after the other. Each restored chain is progress of the loop: the third
    restore starts 400 s after the start, past the stall rule's 300 s, and must not be taken for a stall."""
    cfg = load_config(env={})  # watchdog.stall_timeout_s 300 s
    clock = Clock()
    watchdog = Watchdog(cfg.watchdog.stall_timeout_s, cfg.watchdog.call_margin_s, 30, lambda reason: None, clock=clock)
    own = Ownership(cfg, processor(), build_metrics(CollectorRegistry()), watchdog, clock=clock)
    own.checkpoints = Checkpointer(keys.signer, keys.verifier, cfg.checkpoint_topic)
    flood = [b"not a record %06d" % i for i in range(FLOOD)]
    partitions = _Partitions(clock, watchdog, {cfg.topics.audit: flood, cfg.checkpoint_topic: []})
    monkeypatch.setattr(chainrestore, "Consumer", partitions.consumer)
    monkeypatch.setattr(ownership_mod, "stable_offsets", lambda admin, topic, p, timeout: (FLOOD, FLOOD))
    monkeypatch.setattr(Ownership, "_checkpoints_hidden", lambda self, ap, st: None)
    consumer = _GroupConsumer()
    own.attach(consumer, object())  # type: ignore[arg-type]
    watchdog.beat()
    own.on_assign(consumer, [TopicPartition(TOPIC, p) for p in range(3)])

    own.restore_due()

    assert clock.now - 1000 > 3 * FLOOD * PER_MESSAGE
    assert partitions.reasons == [], partitions.reasons[0]
    assert own.restored() == {(TOPIC, p) for p in range(3)}
