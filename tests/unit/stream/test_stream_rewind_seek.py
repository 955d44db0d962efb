"""A rewind whose seek fails must not let the daemon go on past the batch it could not re-read.

After an abort the daemon seeks each partition back to the batch's first offset (Daemon._rewind).
librdkafka's position is past the batch (and, since the per-partition intake, past what was buffered
behind it), so if the seek fails and the daemon carries on, the next batch starts after the
messages it could not re-read, and its commit moves the group's offset over them: lost audits.
attpipe noticed it in review and could not make a seek fail on a real broker; here the stand-in
consumer's seek raises once. The daemon now exits 3 (fatal), and its restart resumes from the
committed offsets.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from streamkit import TOPIC, compliant, wire
from test_stream_pipeline import ABORTABLE, Consumer, Daemon, Msg, daemon, records

from auditor.exitcodes import ExitCode
from auditor.trail.keys import KeyRing


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys", "example.com/auditor")


class SeekFailsOnce(Consumer):
    def __init__(self, logs: dict[int, int]) -> None:
        super().__init__(logs)
        self.failed = False

    def seek(self, tp: TopicPartition) -> None:
        if not self.failed:
            self.failed = True
            raise KafkaException(KafkaError(KafkaError._STATE, "Partition not assigned"))
        super().seek(tp)


def _run(d: Daemon, consumer: Consumer, steps: int) -> int:
    n = {"steps": 0}

    def step() -> None:
        Daemon.step(d)
        n["steps"] += 1
        if n["steps"] == 4:  # more events arrive after the failed rewind
            consumer.logs[0].extend(Msg(TOPIC, 0, o, wire(compliant("ipasar", o))) for o in range(6, 10))
        if n["steps"] >= steps:
            d.request_stop()

    d.start = lambda: None  # type: ignore[method-assign]
    d.step = step  # type: ignore[method-assign]
    return d.run()


def test_a_failed_seek_after_an_abort_stops_the_daemon_before_anything_past_the_batch_is_committed(keys):
    for pipeline in (False, True):
        d, _, producer = daemon(keys, {0: 6}, pipeline=pipeline)
        consumer = SeekFailsOnce({0: 6})
        d.consumer = consumer  # type: ignore[assignment]
        d.committer.consumer = consumer
        d.ownership.attach(consumer, None)  # type: ignore[arg-type]
        producer.fail[1] = ABORTABLE  # the first transaction (offsets 0-1) aborts: a rewind to 0
        code = _run(d, consumer, 12)
        committed = records(producer)
        offsets = [o for _, o, _ in producer.committed]
        assert committed == [("events/0", i, i) for i in range(len(committed))], \
            f"pipeline={pipeline}: records skip offsets the rewind could not re-read: {committed}"
        assert all(off[0] == len(committed) for off in offsets[-1:]), offsets
        assert code == ExitCode.BROKER, f"pipeline={pipeline}: exit {code}, the daemon carried on after the failed seek"
