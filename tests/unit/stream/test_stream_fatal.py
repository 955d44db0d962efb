"""A fatal Kafka error says whether the instance was fenced, whichever code librdkafka used for it.

The fence of a newer instance with the same transactional id reaches the daemon as ``_FENCED``
("Producer attempted an operation with an old epoch", from send_offsets_to_transaction),
``PRODUCER_FENCED`` or ``INVALID_PRODUCER_EPOCH``; the CI once saw the first, whose text has no
lowercase "fenced", and the daemon's log then gave no reason an operator could act on."""

import pytest
from confluent_kafka import KafkaError

from auditor.stream.commit import Fatal


@pytest.mark.parametrize("code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH])
def test_every_fence_code_is_a_fence(code: int) -> None:
    err = KafkaError(code, "Failed to commit offsets to transaction: Producer attempted an operation with an old epoch",
                     fatal=True)
    fatal = Fatal.of(err)
    assert fatal.fenced
    assert "old epoch" in str(fatal)


@pytest.mark.parametrize("code", [KafkaError._FATAL, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                                  KafkaError.CLUSTER_AUTHORIZATION_FAILED])
def test_other_fatal_errors_are_not_called_fences(code: int) -> None:
    fatal = Fatal.of(KafkaError(code, "something else", fatal=True))
    assert not fatal.fenced
    assert "something else" in str(fatal)
