"""Zombie-safe ownership of source partitions: restore a chain head only when it can be trusted.

A newly assigned partition is paused at once. Between batches the main loop calls
:meth:`Ownership.restore_due`, which for each paused partition:

1. reads the group's committed offset for it. The consumer is read_committed, so the fetch
   asks for stable offsets (KIP-447): while a previous owner's transaction that carries offsets
   for the partition is open, the answer is "not yet";
2. waits (at most ``restore.settle_timeout_s``) until the audit partition has no open
   transaction (last stable offset = high watermark);
3. restores the chain head from the audit partition (read_committed) and checks that it agrees
   with the committed offset (:func:`auditor.stream.restore.disagreement`);
4. then sets the head, catches the file copy up, seeks to the committed offset and resumes.

A chain that ends before the committed offset while its audit partition holds a transaction open
for longer than any transaction may last (``transaction_timeout_ms`` + ``restore.settle_timeout_s``)
meets a hanging transaction: the broker completed a transaction of ours without writing its markers
on that partition (Kafka's coordinator skips the partitions whose leader it cannot find, as after a
broker restart; attx). Its records are in the log but no read_committed reader will ever see them,
and the next marker of our producer there would decide their fate. The daemon closes it itself: a
transaction of its own producer touches the audit and checkpoint partitions and aborts
(:meth:`Ownership._close_hanging`); then the chain's visible end, not the committed offset, is
where auditing resumes (the inputs after it are audited again), once the log proves them aborted
(attr: :meth:`Ownership._behind`; a process that dies inside the abort leaves no memory of it).
Pending offsets of ours hanging on the group's offsets partition (the committed-offset fetch never
stable) are aborted the same way (attr: :meth:`Ownership._unstable`), or, when the log shows that
their transaction's audit records committed (partial markers: no transaction open on the audit and
checkpoint partitions, the chain signed past the group's last committed offset), ended by a commit
of the offset after the chain's signed end (atx: :meth:`Ownership._past_committed_end`).

Anything else (a disagreement, a timeout, a damaged chain) leaves that partition paused and
reported (``auditor_partition_blocked``, a log line, an alert) and is retried every
``restore.retry_s``; the other partitions go on. A partition that cannot make progress
(blocked, or its batches keep aborting) for ``watchdog.progress_timeout_s`` makes readiness fail.
Readiness needs an assignment, but not a partition: a member given none (more members than
partitions) is in its group, idle and ready; ``auditor_partitions_assigned`` counts what it holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from auditor.config import Config
from auditor.errors import AuditorError, TrailCorruption
from auditor.logging import get_logger
from auditor.metrics import Metrics
from auditor.stream.chainrestore import Written, last_written, read_unsigned_chain, restore_chains
from auditor.stream.checkpointing import Checkpointer, UnsignedChains
from auditor.stream.checkpointing import Restored as SignedRestore
from auditor.stream.commit import Fatal
from auditor.stream.processor import BatchProcessor
from auditor.stream.restore import Restored, disagreement, stable_offsets
from auditor.stream.testhook import TestHook
from auditor.stream.watchdog import Watchdog
from auditor.trail import chainid

log = get_logger("auditor.ownership")

Key = tuple[str, int]
CALL_TIMEOUT_S = 10.0
#: committed() waits for stable offsets; short, so that a partition held back by an open transaction
#: of a previous owner does not hold up the others for long
COMMITTED_TIMEOUT_S = 2.0


class NotYet(Exception):
    """The partition's head cannot be trusted yet; the message says why."""


@dataclass
class PartitionState:
    since: float
    restored: bool = False
    next_try: float = 0.0
    attempts: int = 0
    reason: str | None = None
    logged_at: float = 0.0
    failing_since: float | None = None
    #: the audit partition's high watermark at the first try: the chain's head record lies below it
    audit_high: int | None = None
    #: the same of the checkpoint partition (the chain's last signed checkpoint lies below it)
    checkpoint_high: int | None = None
    #: attx: the audit partition's last stable offset while a transaction is open there, and since when
    open_lso: int | None = None
    open_since: float = 0.0
    #: attx: the last stable offset at which this instance aborted a hanging transaction (once per offset)
    closed_at: int | None = None
    #: attr: since when the group's committed offset has not been stable (fetches failing), and when this
    #: instance last aborted what may be its own pending offsets hanging there
    unstable_since: float | None = None
    offsets_closed_at: float | None = None


class Ownership:
    def __init__(self, cfg: Config, processor: BatchProcessor, metrics: Metrics, watchdog: Watchdog,
                 file_copy: Any | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.processor, self.metrics, self.watchdog = cfg, processor, metrics, watchdog
        self.file_copy, self.clock = file_copy, clock
        self.states: dict[Key, PartitionState] = {}
        #: an assignment (possibly empty) came since the start or the last loss: the member is in its group
        self.joined = False
        self.consumer: Any | None = None
        self.admin: AdminClient | None = None
        #: the daemon's transactional producer (attx: closes a hanging transaction of ours); only used
        #: between batches, when no transaction of the daemon is open
        self.producer: Any | None = None
        #: waits until the daemon's in-flight transaction (batch.pipeline) committed or aborted
        self.settle_in_flight: Callable[[], None] = lambda: None
        #: told the partitions revoked or lost (the daemon drops what it buffered of them)
        self.on_drop: Callable[[list[Key]], None] | None = None
        #: AUDITOR_TEST_HOOK's ``in_close_hanging`` step (its own count of the rules; the runner's never reach it)
        self.hook = TestHook.from_env()

    def attach(self, consumer: Any, admin: AdminClient) -> None:
        self.consumer, self.admin = consumer, admin

    # ------------------------------------------------------------------ views
    def owned(self) -> frozenset[Key]:
        return frozenset(self.states)

    def restored(self) -> frozenset[Key]:
        return frozenset(k for k, s in list(self.states.items()) if s.restored)

    def stuck(self, now: float | None = None) -> list[Key]:
        """Partitions that have not been able to make progress for progress_timeout_s."""
        now = self.clock() if now is None else now
        limit = self.cfg.watchdog.progress_timeout_s
        out = []
        for key, st in list(self.states.items()):
            waiting = None if st.restored else st.since
            if st.failing_since is not None:
                waiting = st.failing_since if waiting is None else min(waiting, st.failing_since)
            if waiting is not None and now - waiting > limit:
                out.append(key)
        return out

    # ------------------------------------------------------------------ rebalancing (in consume())
    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)  # nothing of them is processed before their head is trusted
        now = self.clock()
        for tp in partitions:
            self.states[(tp.topic, tp.partition)] = PartitionState(since=now, next_try=now)
        self.joined = True
        self.metrics.partitions_assigned.set(len(self.states))
        log.info("partitions assigned; restoring their chains",
                 partitions=[chainid.chain_id(tp.topic, tp.partition) for tp in partitions])

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Every consumed batch was committed, or is in flight (batch.pipeline: the last one, whose
        # transaction carries the offsets of these partitions), before consume() was called again.
        self.settle_in_flight()
        self._drop(partitions)
        log.info("partitions revoked", partitions=[f"{tp.topic}/{tp.partition}" for tp in partitions])

    def on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.joined = False   # out of the group (session lost) until the next assignment
        self.settle_in_flight()  # it most likely aborts (its offsets are fenced); then it is read again
        self._drop(partitions)
        log.warning("partitions lost", partitions=[f"{tp.topic}/{tp.partition}" for tp in partitions])

    def _drop(self, partitions: Iterable[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if self.on_drop is not None:
            self.on_drop(keys)
        self.processor.forget(chainid.chain_id(t, p) for t, p in keys)
        if self.checkpoints is not None:
            self.checkpoints.forget(chainid.chain_id(t, p) for t, p in keys)
        for key in keys:
            self.states.pop(key, None)
            for gauge in (self.metrics.consumer_lag, self.metrics.partition_blocked, self.metrics.partition_stalled):
                with contextlib.suppress(KeyError):
                    gauge.remove(key[0], str(key[1]))
        self.metrics.partitions_assigned.set(len(self.states))

    # ------------------------------------------------------------------ progress of batches
    def note_aborted(self, keys: Iterable[Key]) -> None:
        now = self.clock()
        for key in keys:
            st = self.states.get(key)
            if st is not None and st.failing_since is None:
                st.failing_since = now

    def note_committed(self, keys: Iterable[Key]) -> None:
        for key in keys:
            st = self.states.get(key)
            if st is not None:
                st.failing_since = None

    def report(self) -> None:
        stuck = set(self.stuck())
        for key in list(self.states):
            self.metrics.partition_stalled.labels(key[0], str(key[1])).set(1 if key in stuck else 0)

    # ------------------------------------------------------------------ restoring (between batches)
    def restore_due(self) -> None:
        now = self.clock()
        for key, st in list(self.states.items()):
            if not st.restored and st.next_try <= now and key in self.states:
                self._try(key, st)

    def _try(self, key: Key, st: PartitionState) -> None:
        topic, partition = key
        chain = chainid.chain_id(topic, partition)
        st.attempts += 1
        try:
            committed = self._committed(key, st)
            stable = self._settle(key, st)
            audit_partition = chainid.audit_partition(partition, self.processor.routing.audit_partitions)
            hidden = self._checkpoints_hidden(audit_partition, st)  # attd: before the read, not after
            with self.watchdog.call("restore chain head", 4 * CALL_TIMEOUT_S):
                signed = self._restore_signed(chain, audit_partition)  # t11: from the signed checkpoint
            if (signed.unsigned or signed.forged) and hidden:
                raise NotYet(f"the signed checkpoints of {chain} may not be readable yet: {hidden}")
            if signed.unsigned:
                signed = self._unsigned(chain, audit_partition, signed)  # t11: refuse (exit 2), or adopt
            restored = Restored(signed.log.head if signed.log.head.size else None, signed.source_offset)
            if restored.head is not None and restored.source_offset is None:
                if st.audit_high is not None and stable < st.audit_high:  # attd: hidden, not gone
                    raise NotYet(f"the head record of {chain} is not readable yet: a transaction open on audit "
                                 f"partition {self.cfg.topics.audit}/{audit_partition} since offset {stable} "
                                 "holds back what read_committed readers see (the chain's decisions cannot be "
                                 "read back until it ends)")
                why = None  # the head record is gone (retention): nothing left to compare, nothing to fork
            else:
                why = disagreement(chain, committed, restored)
            resume = committed
            if why is not None and restored.source_offset is not None and committed > restored.source_offset + 1:
                assert restored.head is not None
                resume = self._behind(key, st, audit_partition, stable, restored.source_offset, why,
                                      restored.head.size, committed)
                why = None
            if why is not None:
                raise NotYet(why)
            self._seek(key, resume)
        except UnsignedChains:
            raise  # not a partition to retry: the daemon stops with exit 2 and the upgrade path
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.fatal():
                # attr: our producer fenced inside _close_hanging (a process of the same instance id took
                # over while this one was frozen): a zombie that stays in the group would be assigned
                # partitions it can never commit; exit 3 like any fenced transaction
                raise Fatal.of(err) from exc
            self._refused(key, st, str(exc) or "no answer from the broker in time")
            return
        except (NotYet, AuditorError, TimeoutError) as exc:  # TimeoutError: an admin future
            self._refused(key, st, str(exc) or "no answer from the broker in time")
            return
        if key not in self.states:  # revoked meanwhile (a rebalance callback in a client call)
            return
        self.processor.set_head(chain, restored.head)
        self._adopt(chain, signed)
        if self.file_copy is not None and restored.head is not None:
            self.file_copy.catch_up(chain, restored.head.size)
        assert self.consumer is not None
        self.consumer.resume([TopicPartition(topic, partition)])
        st.restored, st.reason = True, None
        self.metrics.partition_blocked.labels(topic, str(partition)).set(0)
        # atx: a restored chain is progress of the loop (a partition it can audit again): several partitions
        # restored in turn, each through a long read back, are not a stall
        self.watchdog.beat()
        log.info("chain restored", chain=chain, size=restored.head.size if restored.head else 0,
                 committed_offset=committed, attempts=st.attempts)

    def _committed(self, key: Key, st: PartitionState) -> int:
        assert self.consumer is not None
        try:
            with self.watchdog.call("committed offsets", COMMITTED_TIMEOUT_S):
                (tp,) = self.consumer.committed([TopicPartition(*key)], timeout=COMMITTED_TIMEOUT_S)
        except KafkaException as exc:
            why = (f"the committed offset of {key[0]}/{key[1]} is not stable yet (a previous owner's "
                   f"transaction may still be open): {exc.args[0]}")
            raise NotYet(self._unstable(key, st, why)) from exc
        st.unstable_since = None
        if tp.error is not None:
            raise NotYet(f"the committed offset of {key[0]}/{key[1]} is not available: {tp.error}")
        return int(tp.offset)

    def _hanging_after(self) -> float:
        """Longer than any transaction lasts: the broker aborts one open this long (transaction_timeout_ms),
        and restore.settle_timeout_s more for its markers."""
        return self.cfg.transaction_timeout_ms / 1000 + self.cfg.restore.settle_timeout_s

    def _unstable(self, key: Key, st: PartitionState, why: str) -> str:
        """attr (gap a): the group's offset fetch keeps failing. Pending offsets of a transaction open longer
        than any transaction lasts are those of a hanging one; when they are this instance's own (its
        producer's) no later transaction of ours may ever close them (a daemon whose only partition this
        is): abort them, with the outputs that transaction left open, from our producer (once per
        ``_hanging_after``). Returns why the partition waits."""
        now = self.clock()
        if st.unstable_since is None:
            st.unstable_since = now
        open_for, hanging_after = now - st.unstable_since, self._hanging_after()
        if open_for < hanging_after or self.producer is None:
            return why
        hanging = (f"{why}; for {open_for:.0f}s, longer than any transaction lasts: pending offsets of a hanging "
                   "transaction (its markers never written)")
        if st.offsets_closed_at is not None and now - st.offsets_closed_at < hanging_after:
            return (f"{hanging}. Ending it from this instance's producer (abort, or commit past the chain's signed "
                    "end) did not end it (another producer's, or the broker did not answer); README 'Hanging "
                    "transactions' says how to end it")
        last = self._last_committed(key)
        audit_partition = chainid.audit_partition(key[1], self.processor.routing.audit_partitions)
        after = self._past_committed_end(key, audit_partition, last)  # atx: its records committed
        st.offsets_closed_at = now
        if after is not None:
            log.error("hanging transaction on the group's offsets, its records committed; committing the offset "
                      "after the chain's signed end", partition=f"{key[0]}/{key[1]}", last_committed=last,
                      offset=after, reason=hanging[:500])
            self._commit_offset(TopicPartition(key[0], key[1], after))
            return (f"{hanging}; its audit records are committed (the chain's signed end is input {after - 1}, the "
                    f"group's last committed offset {last}): offset {after} committed from this instance's producer, "
                    "checking again")
        log.error("hanging transaction on the group's offsets; aborting it", partition=f"{key[0]}/{key[1]}",
                  reason=hanging[:500])
        self._close_hanging(audit_partition, TopicPartition(key[0], key[1], last))
        return f"{hanging}; aborted from this instance's producer, checking again"

    def _past_committed_end(self, key: Key, audit_partition: int, last: int) -> int | None:
        """atx (partial markers: a broker back without some of a commit's markers): the transaction whose
        offsets hang committed its audit records. Then aborting the offsets (gap a) leaves the chain ahead
        of the group's offset for good. Returns the offset after the chain's signed end when the log shows
        that: no transaction open on the audit partition nor on its checkpoint partition, and the chain's
        last signed checkpoint signs a head record for an input at or past ``last`` (the group's last
        committed offset): those inputs were audited in committed transactions. None otherwise (the
        records hidden too, an unsigned or forged tail, nothing past ``last``): the abort, as before."""
        cp = self.checkpoints
        assert cp is not None and self.admin is not None
        with self.watchdog.call("audit and checkpoint partition offsets (hanging offsets)", 2 * CALL_TIMEOUT_S):
            stable, high = stable_offsets(self.admin, self.cfg.topics.audit, audit_partition, CALL_TIMEOUT_S)
            cp_stable, cp_high = stable_offsets(self.admin, cp.topic,
                                                chainid.checkpoint_partition(audit_partition, cp.partitions),
                                                CALL_TIMEOUT_S)
        if stable < high or cp_stable < cp_high:
            return None
        with self.watchdog.call("restore chain head (hanging offsets)", 4 * CALL_TIMEOUT_S):
            signed = self._restore_signed(chainid.chain_id(*key), audit_partition)
        if signed.unsigned or signed.forged or signed.source_offset is None or signed.source_offset < last:
            return None
        return signed.source_offset + 1

    def _commit_offset(self, offsets: TopicPartition) -> None:
        """atx: a transaction of the daemon's producer that sends ``offsets`` and commits, nothing else: its
        COMMIT marker on the group's offsets partition ends the pending offsets our producer left hanging
        there (committed, as the coordinator had decided) and commits ``offsets`` after them. A process that
        dies inside it leaves the abort to the next one's init_transactions: the hanging offsets end aborted,
        the chain ahead of the group's offset, and the partition paused with that reason (README 'Hanging
        transactions' says how to end it by hand)."""
        producer, consumer = self.producer, self.consumer
        assert producer is not None and consumer is not None
        with self.watchdog.call("begin_transaction (hanging offsets)", 5.0):
            producer.begin_transaction()
        try:
            metadata = consumer.consumer_group_metadata()
            with self.watchdog.call("send_offsets_to_transaction (hanging offsets)", 3 * CALL_TIMEOUT_S):
                producer.send_offsets_to_transaction([offsets], metadata, 3 * CALL_TIMEOUT_S)
            if self.hook:
                self.hook("in_close_hanging")
            with self.watchdog.call("commit_transaction (hanging offsets)", 3 * CALL_TIMEOUT_S):
                producer.commit_transaction(3 * CALL_TIMEOUT_S)
        except KafkaException as exc:
            if not (isinstance(exc.args[0], KafkaError) and exc.args[0].fatal()):
                with self.watchdog.call("abort_transaction (hanging offsets)", 3 * CALL_TIMEOUT_S):
                    producer.abort_transaction(3 * CALL_TIMEOUT_S)
            raise

    def _last_committed(self, key: Key) -> int:
        """The group's last committed offset of the partition, pending offsets not waited for (a consumer of
        the group that never joins it, read_uncommitted); the earliest offset when it has none."""
        conf = self.cfg.admin_conf()
        reader = Consumer({**conf, "group.id": self.cfg.kafka.group_id, "enable.auto.commit": False,
                           "isolation.level": "read_uncommitted"})
        try:
            with self.watchdog.call("committed offsets (not stable)", CALL_TIMEOUT_S):
                (tp,) = reader.committed([TopicPartition(*key)], timeout=CALL_TIMEOUT_S)
                if tp.error is None and tp.offset >= 0:
                    return int(tp.offset)
                low, _ = reader.get_watermark_offsets(TopicPartition(*key), timeout=CALL_TIMEOUT_S, cached=False)
                return int(low)
        finally:
            reader.close()

    def _settle(self, key: Key, st: PartitionState) -> int:
        """The audit partition's last stable offset, once no transaction is open there or
        restore.settle_timeout_s has passed since the assignment."""
        assert self.admin is not None
        audit_partition = chainid.audit_partition(key[1], self.processor.routing.audit_partitions)
        try:
            with self.watchdog.call("audit partition offsets", CALL_TIMEOUT_S):
                stable, high = stable_offsets(self.admin, self.cfg.topics.audit, audit_partition, CALL_TIMEOUT_S)
        except (KafkaException, TimeoutError):
            # an admin client that failed may never answer again (a coordinator or leader it lost track
            # of after a broker restart): the next try starts with a fresh one
            self.admin = AdminClient(self.cfg.admin_conf())
            raise
        if st.audit_high is None:
            st.audit_high = high
        gap = high - stable
        if gap <= 0:
            st.open_lso = None
        elif st.open_lso != stable:  # attx: a transaction open since ``stable``, first seen now
            st.open_lso, st.open_since = stable, self.clock()
        if gap > 0 and self.clock() - st.since < self.cfg.restore.settle_timeout_s:
            raise NotYet(f"audit partition {self.cfg.topics.audit}/{audit_partition} has an open transaction "
                         f"({gap} offsets above its last stable offset)")
        return stable

    def _behind(self, key: Key, st: PartitionState, audit_partition: int, stable: int, end: int, why: str,
                size: int, committed: int) -> int:
        """attx: the chain (``size`` records) ends at source offset ``end``, before the committed offset.
        Where to resume (``end + 1``, once the hanging transaction that hid the rest was aborted), or NotYet.

        attr: the proof that it was aborted is in the log, not in this process's memory (a process killed
        or fenced inside :meth:`_close_hanging` leaves the abort to the next one's init_transactions, which
        knows nothing of it): no transaction open on the audit partition, and the chain's last record
        there (read_uncommitted) lies past its visible end, below the last stable offset (so aborted),
        for the input just before the committed offset (so the transaction that committed that offset
        wrote it: every input after ``end`` was audited only in aborted transactions)."""
        audit = f"{self.cfg.topics.audit}/{audit_partition}"
        if st.open_lso is None:
            chain = chainid.chain_id(*key)
            with self.watchdog.call("read the chain's last record (read_uncommitted)", 4 * CALL_TIMEOUT_S):
                written = self._last_written(chain, audit_partition)
            if written is not None and written.seq >= size and written.offset < stable \
                    and written.source_offset == committed - 1:
                log.warning("the chain's records past its visible end were aborted (a hanging transaction ended); "
                            "auditing again from the chain's visible end", partition=f"{key[0]}/{key[1]}",
                            audit_partition=audit, resume_offset=end + 1, aborted_through_seq=written.seq,
                            aborted_at=f"{audit}@{written.offset}", closed_here=st.closed_at is not None)
                return end + 1
            raise NotYet(why)
        hanging_after = self._hanging_after()
        open_for = self.clock() - st.open_since
        if open_for < hanging_after:
            raise NotYet(f"{why}; a transaction is open on audit partition {audit} since offset {stable} "
                         f"({open_for:.0f}s)")
        hanging = (f"a transaction open on audit partition {audit} since offset {stable} for {open_for:.0f}s, longer "
                   f"than any transaction lasts: a hanging transaction (its markers never written) hides the "
                   f"chain's last records ({why.split(';')[0]})")
        if st.closed_at == stable or self.producer is None:
            raise NotYet(f"{hanging}. Aborting it from this instance's producer did not close it (another "
                         "producer's, or its messages were not delivered); README 'Hanging transactions' says how "
                         "to end it")
        log.error("hanging transaction on the audit partition; aborting it", partition=f"{key[0]}/{key[1]}",
                  reason=hanging)
        self._close_hanging(audit_partition)
        st.closed_at = stable
        raise NotYet(f"{hanging}; aborted from this instance's producer, checking again")

    def _close_hanging(self, audit_partition: int, offsets: TopicPartition | None = None) -> None:
        """A transaction of the daemon's producer that touches the audit partition and its checkpoint
        partition, and aborts: its ABORT marker also ends the transaction of this producer left open
        there (a marker closes whatever the producer has open on the partition). The messages it writes
        are aborted: no read_committed reader sees them.

        attr: it touches every partition of the violations and dead-letter topics too (gap b): the
        hanging transaction left its violations and dead letters open there, and the inputs audited
        again send theirs again; a partition that no later transaction of ours committed meanwhile
        (none, when this chain was the daemon's only one) has them aborted here, not exposed next to
        their second copies by the next commit marker. With ``offsets`` (gap a) it also sends that
        offset to the transaction: the group's offsets partition joins it, and the ABORT marker there
        ends the pending offsets our producer left hanging (the offset itself is aborted with it)."""
        producer, cp, admin = self.producer, self.checkpoints, self.admin
        assert producer is not None and cp is not None and admin is not None
        targets = [(self.cfg.topics.audit, audit_partition),
                   (cp.topic, chainid.checkpoint_partition(audit_partition, cp.partitions))]
        outputs = (self.cfg.topics.violations, self.cfg.topics.dead_letter)
        with self.watchdog.call("output partitions (hanging)", CALL_TIMEOUT_S):
            md = admin.list_topics(timeout=CALL_TIMEOUT_S)
        for topic in outputs:
            meta = md.topics.get(topic)
            if meta is not None and meta.error is None:
                targets += [(topic, p) for p in sorted(meta.partitions)]
        with self.watchdog.call("begin_transaction (hanging)", 5.0):
            producer.begin_transaction()
        try:
            for topic, partition in targets:
                producer.produce(topic, b"", b"auditor-close-hanging-transaction", partition)
            with self.watchdog.call("flush (hanging)", 2 * CALL_TIMEOUT_S):
                producer.flush(2 * CALL_TIMEOUT_S)  # delivered: the partitions are in the transaction
            if offsets is not None:
                assert self.consumer is not None
                metadata = self.consumer.consumer_group_metadata()
                with self.watchdog.call("send_offsets_to_transaction (hanging)", 3 * CALL_TIMEOUT_S):
                    producer.send_offsets_to_transaction([offsets], metadata, 3 * CALL_TIMEOUT_S)
            if self.hook:
                self.hook("in_close_hanging")
        finally:
            with self.watchdog.call("abort_transaction (hanging)", 3 * CALL_TIMEOUT_S):
                producer.abort_transaction(3 * CALL_TIMEOUT_S)

    def _last_written(self, chain: str, audit_partition: int) -> Written | None:
        return last_written(self.cfg.admin_conf(), self.cfg.topics.audit, audit_partition, chain, CALL_TIMEOUT_S,
                            self.watchdog.progress)

    def _checkpoints_hidden(self, audit_partition: int, st: PartitionState) -> str | None:
        """Why the chain's signed checkpoints may be hidden now, or None: a transaction open on the
        checkpoint partition since before its high watermark at the first look holds back what
        read_committed readers see. Records found covered by no checkpoint (or past the last one
        found) are then no proof of an unsigned or forged chain."""
        cp = self.checkpoints
        assert cp is not None and self.admin is not None
        partition = chainid.checkpoint_partition(audit_partition, cp.partitions)
        with self.watchdog.call("checkpoint partition offsets", CALL_TIMEOUT_S):
            stable, high = stable_offsets(self.admin, cp.topic, partition, CALL_TIMEOUT_S)
        if st.checkpoint_high is None:
            st.checkpoint_high = high
        if stable < st.checkpoint_high:
            return f"a transaction open on checkpoint partition {cp.topic}/{partition} since offset {stable}"
        return None

    def _seek(self, key: Key, committed: int) -> None:
        assert self.consumer is not None
        offset = committed if committed >= 0 else OFFSET_BEGINNING
        self.consumer.seek(TopicPartition(key[0], key[1], offset))

    def _refused(self, key: Key, st: PartitionState, reason: str) -> None:
        now = self.clock()
        st.next_try = now + self.cfg.restore.retry_s
        self.metrics.partition_blocked.labels(key[0], str(key[1])).set(1)
        if reason != st.reason or now - st.logged_at > 30:
            log.warning("partition paused: its chain head cannot be trusted yet; retrying",
                        partition=f"{key[0]}/{key[1]}", reason=reason[:500], attempts=st.attempts,
                        retry_s=self.cfg.restore.retry_s)
            st.reason, st.logged_at = reason, now

    # ------------------------------------------------------------------ t11: signed checkpoints
    checkpoints: Checkpointer | None = None

    def _restore_signed(self, chain: str, audit_partition: int) -> SignedRestore:
        """The chain from its last valid signed checkpoint, checked against the audit topic's tail."""
        cp = self.checkpoints
        assert cp is not None, "Daemon sets ownership.checkpoints"
        return restore_chains(self.cfg.admin_conf(), self.cfg.topics.audit, audit_partition, cp.topic,
                              chainid.checkpoint_partition(audit_partition, cp.partitions), [chain],
                              cp.signer.name, cp.verifier,
                              CALL_TIMEOUT_S, self.watchdog.progress)[chain]

    def _unsigned(self, chain: str, audit_partition: int, signed: SignedRestore) -> SignedRestore:
        """A chain with records but no signed checkpoint: refuse, or (trail.adopt_unsigned_chains) read it
        whole, check it from genesis and adopt it (signed in the next transaction)."""
        assert signed.problem is not None
        if not self.cfg.trail.adopt_unsigned_chains:
            raise UnsignedChains(chain, signed.problem)
        try:
            with self.watchdog.call("read an unsigned chain", 60 * CALL_TIMEOUT_S):
                log_, offset = read_unsigned_chain(self.cfg.admin_conf(), self.cfg.topics.audit, audit_partition,
                                                   chain, CALL_TIMEOUT_S, self.watchdog.progress)
        except TrailCorruption as exc:  # not a partition to retry either: someone has to look at the chain
            raise UnsignedChains(chain, signed.problem, detail=f"{exc}. `auditor verify kafka://HOST:PORT/"
                                 "AUDIT_TOPIC --config ...` names every damaged record") from exc
        return dataclasses.replace(signed, log=log_, source_offset=offset, adopted=log_.head.size,
                                   problem=f"{signed.problem}: adopted under trail.adopt_unsigned_chains, "
                                           f"{log_.head.size} records checked from genesis; signed in the next "
                                           "transaction")

    def _adopt(self, chain: str, signed: SignedRestore) -> None:
        if signed.adopted:
            self.metrics.adopted_unsigned.labels(chain).inc(signed.adopted)
            log.error("unsigned chain adopted", chain=chain, records=signed.adopted, problem=signed.problem)
            if self.checkpoints is not None:
                self.checkpoints.unsigned.add(chain)
        elif signed.forged:
            self.metrics.forged.labels(chain).inc()
            log.error("forged records in the audit topic", chain=chain, problem=signed.problem)
        elif signed.problem:
            log.warning("chain continues from its signed checkpoint", chain=chain, problem=signed.problem)
        if self.checkpoints is not None:
            self.checkpoints.adopt(signed.log)
