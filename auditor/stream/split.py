"""Commit a batch; when the broker keeps refusing its outputs, split it down to the message that fails.

An abort caused by the cluster (a timeout, a lost partition, a broker restart) rewinds the whole
rest of the batch: the same messages are tried again later. An abort caused by an output the
broker refuses (too large, a policy) cannot be cured by retrying: after ``after_failures`` such
aborts the batch is split in halves, each committed on its own, recursively, until the one
message whose outputs are refused is alone; that message is then dead-lettered by reference
(``unwritable``: the daemon passes :meth:`BatchProcessor.reject_unwritable`), so every other
message of the batch is audited and the partition moves on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from auditor.errors import TransientError
from auditor.logging import get_logger
from auditor.stream.commit import Outcome
from auditor.stream.processor import BatchResult, MessageLike

log = get_logger("auditor.stream")

Batch = Sequence[MessageLike]
RETRIES_AFTER_REFUSAL = 3


@dataclass
class Progress:
    #: the parts committed, in order, each with its result
    committed: list[tuple[Batch, BatchResult]] = field(default_factory=list)
    #: the messages not committed (the consumer goes back to their start), empty when all went through
    failed: list[MessageLike] = field(default_factory=list)
    transient: bool = False
    splits: int = 0
    error: str = ""


def commit_or_split(batch: Batch, result: BatchResult | None, process: Callable[[Batch], BatchResult],
                    commit: Callable[[Batch, BatchResult], Outcome],
                    unwritable: Callable[[MessageLike, str], BatchResult], after_failures: int) -> Progress:
    progress = Progress()
    todo: list[tuple[Batch, BatchResult | None]] = [(batch, result)]
    while todo:
        part, res = todo.pop()
        failures, isolated, after_refusal = 0, False, 0
        while True:
            try:
                res = process(part) if res is None else res
            except TransientError as exc:
                return _failed(progress, part, todo, str(exc), transient=True)
            outcome = commit(part, res)
            if outcome.committed:
                progress.committed.append((part, res))
                break
            if not outcome.content_error or isolated:
                # right after a refusal the producer may need one more abort to bump its epoch
                # (KIP-360: "skipped sequence numbers"); a part already being split gets a retry
                if (progress.splits or failures or isolated) and after_refusal < RETRIES_AFTER_REFUSAL:
                    after_refusal += 1  # the abort dropped the working heads: seal again
                    res = unwritable(part[0], outcome.error) if isolated else None
                    continue
                return _failed(progress, part, todo, outcome.error)
            failures += 1
            if failures < after_failures:
                res = None
                continue
            if len(part) == 1:
                log.error("the broker refuses the outputs of one message; it is dead-lettered by reference",
                          topic=part[0].topic(), partition=part[0].partition(), offset=part[0].offset(),
                          error=outcome.error[:300])
                res, isolated = unwritable(part[0], outcome.error), True
                continue
            half = len(part) // 2
            progress.splits += 1
            log.warning("the broker refuses an output of this batch; splitting it", messages=len(part),
                        failures=failures, error=outcome.error[:300])
            todo.append((part[half:], None))
            todo.append((part[:half], None))
            break
    return progress


def _failed(progress: Progress, part: Batch, todo: list[tuple[Batch, BatchResult | None]], error: str,
            transient: bool = False) -> Progress:
    progress.failed = list(part) + [m for rest, _ in reversed(todo) for m in rest]
    progress.transient, progress.error = transient, error
    return progress
