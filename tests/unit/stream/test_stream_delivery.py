"""What the commit reads of a refused output, and what it asks the consumer for, per batch.

The daemon's producer asks librdkafka for the delivery reports of failed outputs only, and the
commit passes no delivery callback per output: a refused output fails the transaction, and the
error that send_offsets_to_transaction or commit_transaction raises carries the broker's code for
it (checked on a real broker: tests/integration/test_commit_refused_code.py). That code alone makes
the abort a content error (the batch is split), any other code a retry."""

from __future__ import annotations

import contextlib
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from auditor.config import load_config
from auditor.stream.commit import BatchCommit
from auditor.stream.processor import BatchResult, Outgoing


class _Producer:
    """Records what each produce() was given; commit_transaction raises ``commit_error`` if set."""

    def __init__(self, commit_error: KafkaError | None = None) -> None:
        self.commit_error = commit_error
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, *args: Any) -> None: ...
    def abort_transaction(self, *args: Any) -> None: ...

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))

    def poll(self, timeout: float) -> int:
        return 0

    def commit_transaction(self, timeout: float) -> None:
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)


class _Processor:
    def discard_heads(self) -> None: ...
    def commit_heads(self, heads: Any = None) -> None: ...


class _Consumer:
    def __init__(self) -> None:
        self.asked = 0

    def consumer_group_metadata(self) -> str:
        self.asked += 1
        return f"generation-{self.asked}"


class _Dog:
    def call(self, *args: Any) -> Any:
        return contextlib.nullcontext()


def _result(n: int) -> BatchResult:
    return BatchResult(outgoing=[Outgoing("audit", 0, b"k", b"v%d" % i) for i in range(n)]
                       + [Outgoing("dead", None, None, b"d", (("reason", b"x"),))])


def _commit(producer: _Producer, consumer: _Consumer | None = None, n: int = 5) -> Any:
    commit = BatchCommit(producer, consumer or _Consumer(), _Processor(), _Dog())  # type: ignore[arg-type]
    return commit.commit([], _result(n))


def test_the_daemon_producer_reports_only_failed_deliveries():
    assert load_config(env={}).producer_conf("auditor-x")["delivery.report.only.error"] is True


def test_outputs_are_produced_without_a_delivery_callback_each():
    producer = _Producer()
    assert _commit(producer).committed
    assert len(producer.calls) == 6
    assert all("on_delivery" not in kwargs and "callback" not in kwargs for _, kwargs in producer.calls)
    assert producer.calls[0][0] == ("audit", b"v0", b"k", 0)
    assert producer.calls[-1] == (("dead", b"d", None, -1), {"headers": [("reason", b"x")]})


def test_a_transaction_refused_with_a_content_code_is_a_content_error():
    outcome = _commit(_Producer(commit_error=KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)))
    assert not outcome.committed and outcome.content_error


def test_a_transaction_refused_with_another_code_is_not_a_content_error():
    for code in (KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError.ILLEGAL_GENERATION):
        outcome = _commit(_Producer(commit_error=KafkaError(code)))
        assert not outcome.committed and not outcome.content_error
