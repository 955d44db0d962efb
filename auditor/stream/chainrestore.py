"""Restore chains on assignment from the checkpoint topic, checked against the audit topic's tail.

For each wanted chain: its last valid signed checkpoint (read backwards from the end of the
chain's checkpoint partition, in windows, signature and compact range checked), and its last
record in the audit partition (also read backwards). :func:`auditor.stream.checkpointing.judge`
then decides how the chain continues. Both reads are read_committed, outside the group.

Every read back reports each window it read to ``progress`` (the daemon passes
:meth:`~auditor.stream.watchdog.Watchdog.progress`): the watched call's timeout then bounds one
window, not a whole partition, however long a flood made it (atx).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from auditor.errors import BrokerError, TrailCorruption
from auditor.logging import get_logger
from auditor.metrics import Metrics
from auditor.stream.checkpointing import Checkpointer, LastRecord, Restored, judge
from auditor.stream.restore import read_forward
from auditor.trail import chainid
from auditor.trail.canonical import record_from_bytes
from auditor.trail.chain import ChainHead
from auditor.trail.chainlog import ChainLog, stored_from_message
from auditor.trail.checkpoint import SignedCheckpoint, StoredCheckpoint, origin_for
from auditor.trail.keys import Verifier
from auditor.trail.record import RecordType

log = get_logger("auditor.restore")

WINDOW = 2000
#: told after each window read (the daemon: the watchdog's :meth:`~auditor.stream.watchdog.Watchdog.progress`)
Progress = Callable[[], None]
#: ... and at most this many bytes of message values and keys (anyone who may write to the audit topic can
#: append messages up to its max.message.bytes: 2,000 of 1 MiB kept 2 GiB at every restore, attops)
WINDOW_BYTES = 16 * 1024 * 1024


def restore_chains(conf: dict[str, Any], audit_topic: str, audit_partition: int, checkpoint_topic: str,
                   checkpoint_partition: int, chain_ids: Iterable[str], key_name: str, verifier: Verifier,
                   timeout: float = 30.0, progress: Progress | None = None) -> dict[str, Restored]:
    wanted = list(chain_ids)
    origins = {origin_for(key_name, c): c for c in wanted}
    consumer = Consumer({**conf, "group.id": "auditor-restore", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    try:
        checkpoints = _last_checkpoints(consumer, checkpoint_topic, checkpoint_partition, origins, verifier, timeout,
                                        progress)
        heads = {c: (signed.size, signed.head.head_hash) for c, (signed, _) in checkpoints.items()}
        records, offsets = _last_records(consumer, audit_topic, audit_partition, set(wanted), heads, timeout,
                                         progress)
    except KafkaException as exc:
        raise BrokerError(f"cannot restore chains from {audit_topic}/{audit_partition} and "
                          f"{checkpoint_topic}/{checkpoint_partition}: {exc}") from exc
    finally:
        consumer.close()
    def restore(stored: StoredCheckpoint) -> ChainLog:
        return ChainLog.restore(stored, verifier)

    return {c: dataclasses.replace(judge(c, checkpoints.get(c), records.get(c), restore), source_offset=offsets.get(c))
            for c in wanted}


def _last_checkpoints(consumer: Consumer, topic: str, partition: int, origins: dict[str, str], verifier: Verifier,
                      timeout: float, progress: Progress | None = None
                      ) -> dict[str, tuple[SignedCheckpoint, StoredCheckpoint]]:
    found: dict[str, tuple[SignedCheckpoint, StoredCheckpoint]] = {}
    #: checkpoints keyed for a wanted chain that are not used: logged once per restore, counted (the key is
    #: public, so anyone who may write to the topic could make one error line each, at every restore)
    invalid: list[tuple[int, str]] = []

    def visit(m: Message) -> None:
        chain = origins.get((m.key() or b"").decode("utf-8", "replace"))
        if chain is None or chain in found:
            return
        try:
            kind, stored = stored_from_message(m.value() or b"", m.headers())  # type: ignore[arg-type]
            if kind != "checkpoint":
                return
            signed = stored.open(verifier)
        except TrailCorruption as exc:
            invalid.append((m.offset() or 0, str(exc)))
            return
        if signed.chain_id != chain:
            invalid.append((m.offset() or 0, f"keyed for {chain}, signed for another chain"))
            return
        found[chain] = (signed, stored)

    try:
        _scan_back(consumer, topic, partition, visit, lambda: len(found) == len(origins), timeout, progress)
    finally:
        if invalid:
            (first, error), (last, _) = min(invalid), max(invalid)
            log.error("invalid checkpoints in the checkpoint topic; not used", checkpoints=len(invalid),
                      where=f"{topic}/{partition}@{first}..{last}", error=error)
    return found


def _last_records(consumer: Consumer, topic: str, partition: int, wanted: set[str],
                  heads: dict[str, tuple[int, bytes]], timeout: float, progress: Progress | None = None
                  ) -> tuple[dict[str, LastRecord], dict[str, int | None]]:
    """Per chain: its last record (by offset), and the source offset of the record its checkpoint
    signs as head (None: gone). Reading back stops for a chain at a record older than its head."""
    found: dict[str, LastRecord] = {}
    offsets: dict[str, int | None] = {c: None for c in wanted if c not in heads}
    #: chains whose head record is a CORRECTION (its source is the corrected input, not the chain's
    #: position in its partition): the source offset is that of the last record before the corrections
    behind: set[str] = set()

    unreadable: list[int] = []

    def visit(m: Message) -> None:
        where = f"{topic}/{partition}@{m.offset()}"
        try:
            record = record_from_bytes(m.value() or b"")
        except Exception:  # noqa: BLE001 - any undecodable bytes: not a record of ours
            unreadable.append(m.offset() or 0)  # logged once, counted (a flood of them is not a flood of lines)
            return
        chain = record.chain_id
        if chain not in wanted:
            return
        if chain not in found:
            found[chain] = LastRecord(record.seq, record.record_hash, where)
        if chain not in offsets:
            size, head = heads[chain]
            if record.seq == size - 1 and record.record_hash == head:
                if record.record_type is RecordType.CORRECTION:
                    behind.add(chain)  # l12: a correction names an earlier input; the position is before it
                else:
                    offsets[chain] = record.source.offset
            elif chain in behind:
                if record.record_type is not RecordType.CORRECTION:
                    offsets[chain] = record.source.offset
            elif record.seq < size - 1:
                offsets[chain] = None  # the head record is gone: nothing older can be it

    try:
        _scan_back(consumer, topic, partition, visit,
                   lambda: len(found) == len(wanted) and len(offsets) == len(wanted), timeout, progress)
    finally:
        if unreadable:
            log.error("unreadable bytes in the audit topic (not written by the auditor)", messages=len(unreadable),
                      where=f"{topic}/{partition}@{min(unreadable)}..{max(unreadable)}")
    for chain in wanted:
        offsets.setdefault(chain, None)
    return found, offsets


def _scan_back(consumer: Consumer, topic: str, partition: int, visit: Callable[[Message], None],
               done: Callable[[], bool], timeout: float, progress: Progress | None = None) -> None:
    """Visit committed messages from the partition's end backwards, window by window, until done();
    ``progress`` is called after each window (atx: a watched call's timeout then bounds one window)."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
    end, size = high, WINDOW
    while not done() and end > low:
        start = max(low, end - size)
        window, cut = _window(consumer, topic, partition, start, end, timeout, WINDOW_BYTES)
        for m in reversed(window):
            visit(m)
            if done():
                return
        window.clear()  # before the next window is read
        if progress is not None:
            progress()
        # Large messages: only those from ``cut`` on fitted; the next window ends there, no wider than that
        size = max(1, end - cut) if cut > start else min(WINDOW, 2 * size)
        end = cut


def _window(consumer: Consumer, topic: str, partition: int, start: int, end: int, timeout: float,
            max_bytes: int | None = None) -> tuple[list[Message], int]:
    """The messages with a value in [start, end), and the offset they start from: ``start``, or later when
    they weigh more than ``max_bytes`` (the last ones are kept, at least one)."""
    out: deque[Message] = deque()
    held, cut = 0, start
    for msg in read_forward(consumer, topic, partition, start, end, timeout):
        out.append(msg)
        if max_bytes is not None:
            held += _weight(msg)
            while held > max_bytes and len(out) > 1:
                gone = out.popleft()
                held -= _weight(gone)
                cut = (gone.offset() or 0) + 1
    return list(out), cut


def _weight(m: Message) -> int:
    """The bytes a kept message holds: its value, key and headers (each up to max.message.bytes)."""
    headers: list[tuple[str, bytes | None]] = m.headers() or []  # type: ignore[assignment]
    return len(m.value() or b"") + len(m.key() or b"") + sum([len(k) + len(v or b"") for k, v in headers])


@dataclasses.dataclass(frozen=True)
class Written:
    """attr: the last record of a chain in the audit partition's log, whether committed, aborted or open."""

    offset: int
    seq: int
    source_offset: int | None


def last_written(conf: dict[str, Any], topic: str, partition: int, chain_id: str,
                 timeout: float = 30.0, progress: Progress | None = None) -> Written | None:
    """The chain's last record by offset as a read_uncommitted reader sees the partition (aborted records
    included), CORRECTION records passed over (their source is an earlier input); None when it has none.

    Read backwards from the partition's end until the first such record: after a hanging transaction
    that was aborted, the hidden records are at the end of the chain's part of the log."""
    found: list[Written] = []

    def visit(m: Message) -> None:
        try:
            record = record_from_bytes(m.value() or b"")
        except Exception:  # noqa: BLE001 - not a record (the aborted messages that closed a hanging transaction)
            return
        if record.chain_id == chain_id and record.record_type is not RecordType.CORRECTION:
            found.append(Written(m.offset() or 0, record.seq, record.source.offset))

    consumer = Consumer({**conf, "group.id": "auditor-restore-written", "enable.auto.commit": False,
                         "isolation.level": "read_uncommitted", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    try:
        _scan_back(consumer, topic, partition, visit, lambda: bool(found), timeout, progress)
    except KafkaException as exc:
        raise BrokerError(f"cannot read {topic}/{partition}: {exc}") from exc
    finally:
        consumer.close()
    return found[0] if found else None


def read_unsigned_chain(conf: dict[str, Any], topic: str, partition: int, chain_id: str,
                        timeout: float = 30.0, progress: Progress | None = None) -> tuple[ChainLog, int | None]:
    """An unsigned chain (records, no signed checkpoint) read whole from the audit partition, every
    record hash recomputed and every link checked from genesis: its log (to sign) and the source
    offset of its last record. Raises TrailCorruption naming the first record that does not follow
    (a chain can be adopted only whole and intact)."""
    from auditor.trail.canonical import iter_frames
    from auditor.trail.chain import hash_record_bytes

    log = ChainLog.genesis(chain_id)
    last: bytes | None = None
    consumer = Consumer({**conf, "group.id": "auditor-adopt", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
        if high > low:  # read forward one message at a time: no window is kept (attops)
            with contextlib.closing(read_forward(consumer, topic, partition, low, high, timeout)) as messages:
                for i, m in enumerate(messages, 1):
                    if progress is not None and i % WINDOW == 0:
                        progress()
                    value = m.value() or b""
                    where = f"{topic}/{partition}@{m.offset()}"
                    try:
                        frame = next(iter_frames(value, 1))
                    except TrailCorruption:
                        continue  # not a record (verify names it); it is no part of any chain
                    if frame.chain_id != chain_id:
                        continue
                    head = log.head
                    if frame.seq != head.size or frame.prev_hash != head.head_hash or frame.end != len(value) \
                            or hash_record_bytes(value[:-32]) != frame.record_hash:
                        what = (f"seq {frame.seq} where seq {head.size} was due" if frame.seq != head.size
                                else "a record that does not link to or hash as the chain before it")
                        raise TrailCorruption(f"cannot adopt chain {chain_id}: {what} at {where}; only a whole "
                                              "chain that verifies from genesis can be adopted", chain=chain_id,
                                              seq=frame.seq)
                    log.extend(frame.record_hash, frame.seq)
                    last = value
    except KafkaException as exc:
        raise BrokerError(f"cannot read chain {chain_id} from {topic}/{partition}: {exc}") from exc
    finally:
        consumer.close()
    return log, None if last is None else record_from_bytes(last).source.offset


def restore_assigned(checkpoints: Checkpointer, conf: dict[str, Any], audit_topic: str, audit_partition: int,
                     chain_ids: list[str], metrics: Metrics, timeout: float = 30.0) -> dict[str, ChainHead]:
    """Restore the chains of one audit partition into ``checkpoints``; their heads for the processor."""
    restored = restore_chains(conf, audit_topic, audit_partition, checkpoints.topic,
                              chainid.checkpoint_partition(audit_partition, checkpoints.partitions), chain_ids,
                              checkpoints.signer.name,
                              checkpoints.verifier, timeout)
    heads = {}
    for chain, r in restored.items():
        if r.forged:
            metrics.forged.labels(chain).inc()
            log.error("forged records in the audit topic", chain=chain, problem=r.problem)
        elif r.problem:
            log.warning("chain continues from its signed checkpoint", chain=chain, problem=r.problem)
        checkpoints.adopt(r.log)
        heads[chain] = r.log.head
    return heads


def history_since(conf: dict[str, Any], audit_topic: str, audit_partition: int, checkpoint_topic: str,
                  checkpoint_partition: int, chain_id: str, key_name: str, verifier: Verifier, old: int, new: int,
                  timeout: float = 30.0) -> tuple[tuple[bytes, ...], list[bytes]]:
    """What a consistency proof from size ``old`` needs, from the topics: the compact range stored with
    the chain's signed checkpoint of size ``old``, and the record hashes of seq ``old`` .. ``new - 1``.

    For the witness thread, when a witness holds a size older than anything it kept (a partition that
    moved between instances, a restart). Raises TrailCorruption when either part cannot be found.
    """
    origin = origin_for(key_name, chain_id)
    found: list[SignedCheckpoint] = []
    ranges: list[tuple[bytes, ...]] = []
    hashes: dict[int, bytes] = {}
    consumer = Consumer({**conf, "group.id": "auditor-witness-history", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})

    def checkpoint(m: Message) -> None:
        if (m.key() or b"").decode("utf-8", "replace") != origin:
            return
        try:
            kind, stored = stored_from_message(m.value() or b"", m.headers())  # type: ignore[arg-type]
            signed = stored.open(verifier) if kind == "checkpoint" else None
        except TrailCorruption:
            return
        if signed is not None and signed.chain_id == chain_id and signed.size <= old and not found:
            if signed.size == old:
                ranges.append(stored.range)
            found.append(signed)

    low_seq = [new]

    def record(m: Message) -> None:
        try:
            r = record_from_bytes(m.value() or b"")
        except TrailCorruption:
            return
        if r.chain_id == chain_id:
            low_seq[0] = min(low_seq[0], r.seq)
            if old <= r.seq < new and r.seq not in hashes:
                hashes[r.seq] = r.record_hash

    try:
        _scan_back(consumer, checkpoint_topic, checkpoint_partition, checkpoint, lambda: bool(found), timeout)
        _scan_back(consumer, audit_topic, audit_partition, record, lambda: low_seq[0] < old, timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot read the history of {chain_id}: {exc}") from exc
    finally:
        consumer.close()
    if not ranges:
        raise TrailCorruption(f"no signed checkpoint of {chain_id} at size {old} in {checkpoint_topic}", chain=chain_id)
    missing = [s for s in range(old, new) if s not in hashes]
    if missing:
        raise TrailCorruption(f"records {missing[0]}.. of {chain_id} are gone from {audit_topic}", chain=chain_id)
    return ranges[0], [hashes[s] for s in range(old, new)]
