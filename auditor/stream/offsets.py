"""Partition offsets through a long-lived admin client, with its metadata refreshed when stale.

An admin client sends each ListOffsets request with the partition leader's epoch from its own
metadata cache (KIP-320), and nothing it does refreshes that cache: once the leader epoch moves
on (a broker fenced by its controller after a SIGSTOP, a leader election, a restart), every
later request is refused with ``FENCED_LEADER_EPOCH`` for as long as the client lives. The
daemon's chain restore and its lag thread would then wait for ever (issue 9: after a broker's
SIGSTOP and SIGCONT every partition stayed paused). The Java client refreshes its metadata on
these errors before retrying (KAFKA-9535); :func:`list_offsets` does the same: on an error that
says the metadata is stale it asks for the topics' metadata again and retries once.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from auditor.logging import get_logger

log = get_logger("auditor.stream")

#: errors of a request sent with stale metadata (leader or leader epoch): refresh, then retry.
#: ``_NOENT`` is the client's own "Failed to query partition leaders: No leaders found", seen when
#: its cache last saw the partitions without a leader (a broker just restarted).
STALE_METADATA = frozenset({
    KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.REPLICA_NOT_AVAILABLE, KafkaError._NOENT,
})


def list_offsets(admin: AdminClient, tps: Iterable[TopicPartition], spec: OffsetSpec, timeout: float,
                 isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED) -> dict[tuple[str, int], int]:
    """(topic, partition) -> offset of ``spec``; raises KafkaException when the retry fails too."""
    wanted = list(tps)
    try:
        return _once(admin, wanted, spec, timeout, isolation)
    except KafkaException as exc:
        err = exc.args[0]
        if not isinstance(err, KafkaError) or err.code() not in STALE_METADATA:
            raise
        topics = sorted({tp.topic for tp in wanted})
        log.info("offsets refused for stale metadata; refreshing it and asking again", error=str(err),
                 topics=topics)
        for topic in topics:
            admin.list_topics(topic, timeout=timeout)  # the leader and its epoch, as the cluster has them now
        return _once(admin, wanted, spec, timeout, isolation)


def _once(admin: AdminClient, tps: list[TopicPartition], spec: OffsetSpec, timeout: float,
          isolation: IsolationLevel) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets({tp: spec for tp in tps}, isolation_level=isolation, request_timeout=timeout)
    return {(tp.topic, tp.partition): fut.result(timeout).offset for tp, fut in futures.items()}
