"""The chain id and the audit partition, each decided in one function.

There is one hash chain per source partition. Its id is ``"<topic>/<partition>"`` for a Kafka
source and ``"file:<name>"`` for an offline file (``auditor check --trail``). Every record of a
chain is written, in order, to one partition of the audit topic: :func:`audit_partition`. The
daemon's router, its restore of chain heads after a rebalance, the file copy's back-fill and the
verifier all call these, so they cannot disagree. Kafka topic names cannot hold ``/``, so the id
splits unambiguously at its last ``/``.
"""

from __future__ import annotations

FILE_PREFIX = "file:"


def chain_id(topic: str, partition: int | None) -> str:
    """The chain of a Kafka source partition (a missing partition counts as 0)."""
    return f"{topic}/{partition if partition is not None else 0}"


def file_chain_id(name: str | None) -> str:
    """The chain of an offline events file, by its name (not its path: a re-run from another
    directory continues the same chain)."""
    return f"{FILE_PREFIX}{name or '-'}"


def is_file_chain(chain: str) -> bool:
    return chain.startswith(FILE_PREFIX)


def source_of(chain: str) -> tuple[str, int]:
    """The (topic, partition) a Kafka chain id names; ValueError for a file chain or a bad id."""
    if is_file_chain(chain):
        raise ValueError(f"{chain} is a file chain, not a Kafka partition's")
    topic, sep, part = chain.rpartition("/")
    if not sep or not topic or not part.isdigit():
        raise ValueError(f"not a chain id of the form <topic>/<partition>: {chain!r}")
    return topic, int(part)


def source_partition(chain: str) -> int:
    """The source partition a Kafka chain id names; ValueError for a file chain or a bad id."""
    return source_of(chain)[1]


def audit_partition(partition: int | None, audit_partitions: int) -> int:
    """The audit-topic partition that a source partition's chain is written to."""
    if audit_partitions < 1:
        raise ValueError(f"the audit topic needs at least one partition, got {audit_partitions}")
    return (partition or 0) % audit_partitions


def checkpoint_partition(audit_partition: int, checkpoint_partitions: int) -> int:
    """The checkpoint-topic partition that carries the signed checkpoints of one audit partition's chains."""
    if checkpoint_partitions < 1:
        raise ValueError(f"the checkpoint topic needs at least one partition, got {checkpoint_partitions}")
    return audit_partition % checkpoint_partitions


def audit_partition_of_chain(chain: str, audit_partitions: int) -> int:
    """The audit partition of a chain id (a file chain, which has no source partition, maps to 0)."""
    try:
        return audit_partition(source_partition(chain), audit_partitions)
    except ValueError:
        return 0
