"""The daemon's producer asks librdkafka for the delivery reports of failed outputs only: the
commit reads nothing else from them (which output the broker refused, to split the batch)."""

from __future__ import annotations

import contextlib
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from auditor.config import load_config
from auditor.stream.commit import BatchCommit
from auditor.stream.processor import BatchResult, Outgoing


class _Producer:
    """Keeps each output's delivery callback; poll() reports ``fail`` for the outputs it names."""

    def __init__(self, fail: dict[int, KafkaError], commit_error: KafkaError | None = None) -> None:
        self.fail, self.commit_error = fail, commit_error
        self.callbacks: list[Any] = []

    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, *args: Any) -> None: ...
    def abort_transaction(self, *args: Any) -> None: ...

    def produce(self, topic: str, value: bytes, key: bytes | None, partition: int, on_delivery: Any,
                headers: Any = None) -> None:
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float) -> int:
        for i, cb in enumerate(self.callbacks):
            if i in self.fail:
                cb(self.fail[i], None)  # with delivery.report.only.error, the only reports there are
        self.callbacks.clear()
        return 0

    def commit_transaction(self, timeout: float) -> None:
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)


class _Processor:
    def discard_heads(self) -> None: ...
    def commit_heads(self) -> None: ...


class _Consumer:
    def consumer_group_metadata(self) -> None:
        return None


class _Dog:
    def call(self, *args: Any) -> Any:
        return contextlib.nullcontext()


def _result(n: int) -> BatchResult:
    return BatchResult(outgoing=[Outgoing("audit", 0, b"k", b"v%d" % i) for i in range(n)])


def _commit(producer: _Producer, n: int = 5) -> Any:
    commit = BatchCommit(producer, _Consumer(), _Processor(), _Dog())  # type: ignore[arg-type]
    return commit.commit([], _result(n))


def test_the_daemon_producer_reports_only_failed_deliveries():
    assert load_config(env={}).producer_conf("auditor-x")["delivery.report.only.error"] is True


def test_an_output_the_broker_refused_marks_the_abort_as_a_content_error():
    # the transaction fails with an error of the cluster's kind; the error report names the content
    timeout = KafkaError(KafkaError._TIMED_OUT)
    outcome = _commit(_Producer({2: KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)}, commit_error=timeout))
    assert not outcome.committed and outcome.content_error
    outcome = _commit(_Producer({}, commit_error=timeout))
    assert not outcome.committed and not outcome.content_error


def test_an_error_report_of_another_kind_is_not_a_content_error():
    timeout = KafkaError(KafkaError._TIMED_OUT)
    outcome = _commit(_Producer({0: KafkaError(KafkaError._MSG_TIMED_OUT)}, commit_error=timeout))
    assert not outcome.committed and not outcome.content_error
