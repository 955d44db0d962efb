"""The daemon's subject ledger: facts from ``topics.facts`` into the instance's on-disk store, the
join before each decision, and correction records for late facts.

Configured by ``ledger.dir`` (off when unset; then nothing here runs and events are judged on
their own claims). The store of one instance lives in ``ledger.dir/<instance_id>``.

* **At start** :func:`check_copartitioned`: the facts topic exists and has as many partitions as
  every event topic. A subject's facts and events are keyed by subject id with the same
  partitioner, so partition *p* of the facts holds the facts of the subjects whose events are in
  partition *p*; with other counts an instance would judge events against someone else's facts.
  A mismatch stops the daemon with exit code 2 and a message that says how to fix it.
* **Before each batch** :meth:`LedgerFeed.before_batch` reads the facts partitions of the
  instance's restored event partitions up to their current end (read_committed: the last stable
  offset, asked of the broker each time). A partition seen for the first time resumes where the
  store stopped (:func:`~auditor.ledger.store.resume_from`), so a restart reads only what it
  missed and a partition new to this instance is restored from the start of the topic. Facts are
  written with ``advance=False``:
* **Late facts**: the facts just applied are checked against the index of recent decisions
  (:class:`~auditor.ledger.late.DecisionIndex`, ``ledger.correction_window_s``); each decision
  whose ledger answers changed is judged again and a CORRECTION record (``ledger.corrects`` names
  the record and the late facts) is appended to its chain in a transaction of its own. Only once
  that transaction has committed are the facts confirmed in the store and the new answers
  acknowledged in the index; if it aborts, the facts are read again before the next batch, so a
  crash in between repeats the check instead of losing it.
* **After each batch** commits, its decisions that read the ledger are added to the index.
* **A chain new to this instance** (assigned in a rebalance, or every chain after a restart) is
  indexed from the trail before its first batch (:meth:`LedgerFeed._index_from_trail`): its
  records in the audit topic written within ``ledger.correction_window_s`` are read back, each
  decision's questions asked again by the join with the answers its record stores (a correction
  supersedes the answers of the decision it corrects), and then every indexed decision of the
  chain is asked again against the facts as they now stand (:meth:`DecisionIndex.recheck`): a
  fact that arrived after another instance made a decision, or after this instance crashed
  between a batch's commit and its index write, is corrected like any late fact. Until then its
  decisions are not corrected by the facts read meanwhile (they are rechecked instead). A chain
  whose marker says its local entries are still good (a restart; a partition back with no fact
  of it applied here since it left) is *resumed* instead (:meth:`LedgerFeed._resume_from_trail`):
  only its records after the marker are read back, before the facts, and rechecked after them.
  Either way only the chain's own records are read back: those on the path of hash links that
  ends at the chain's head as restored from its signed checkpoint (:meth:`LedgerFeed._read_back`;
  a record someone else appended to the audit topic, however well linked, is skipped).

The join itself is :class:`~auditor.ledger.judging.StoreJudge`, the code path of
``auditor check --ledger`` too, so the daemon and the offline check give the same verdicts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import CollectorRegistry, Counter, Gauge

from auditor.config import Config
from auditor.errors import AuditorError, BrokerError, ConfigError, DecodeError, TransientError
from auditor.events.model import Event
from auditor.ledger.asof import LOG_LAG_US
from auditor.ledger.codec import FactDecoder
from auditor.ledger.join import Judged, RecordedView
from auditor.ledger.judging import EVENT_LAG_US, StoreJudge, escaped
from auditor.ledger.late import Correction, DecisionIndex, DecisionReads, LateReport, Marker
from auditor.ledger.model import FACT_FAMILY, RESTRICTIVE, Family, LogTime, Scope, SubjectFact, to_us
from auditor.ledger.partitioning import subject_partition
from auditor.ledger.store import NO_BOUND, NOT_LOGGED, Applied, LedgerStore, LogBound, Logged, resume_from
from auditor.ledger.vocabulary import UndeclaredScopes
from auditor.logging import get_logger
from auditor.policy import Decision, Verdict
from auditor.policy.engine import MemoEvaluator
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.stream.restore import stable_offsets
from auditor.stream.topics import describe, facts_findings, facts_fix_command
from auditor.trail import chainid
from auditor.trail.canonical import iter_frames, record_from_bytes
from auditor.trail.chain import hash_record_bytes
from auditor.trail.record import CorrectedRecord, RecordType, build_record, record_to_event

log = get_logger("auditor.ledger")

#: facts applied per store transaction while reading a partition
CHUNK = 20_000
#: facts read per round before their corrections are written and they are confirmed
ROUND = 200_000
CALL_TIMEOUT_S = 10.0
#: how often the facts and event topics' partition counts are checked again while the daemon runs
PARTITIONS_CHECK_S = 10.0
#: decisions read back from the audit topic per index transaction
READ_BACK_CHUNK = 2_000
#: audit records read per window when a chain's path is walked back from its head
WALK_WINDOW = 2_000
#: about the bytes of messages one consume() of a read-back hands over (held at once): it takes as many as
#: the largest of its last batch allows, up to 1,000 (at first 16: large foreign messages, attops)
SCAN_BYTES = 8 * 1024 * 1024
#: how long a facts partition's last stable offset may stay below its end (a transaction open on the facts
#: topic holds back every fact after its first record) before it is logged: the lag a grant is allowed
HELD_BACK_S = LOG_LAG_US / 1_000_000
#: how often the auditor's reads of the facts partitions' ends are kept in the store (microseconds): at most what
#: a kill -9 loses of them
KEEP_READS_US = 10 * 1_000_000
#: a resumed chain is read back from this long before its marker was written (records' timestamps
#: are their producers' clocks: instances whose clocks differ by more may be missed)
RESUME_SKEW_MS = 300_000


#: the families whose restrictive facts are a person's own instruction (withdrawn, opted out, deletion
#: requested: "at all times", "at any time"), unlike an account closed or a service ended on a date agreed
INSTRUCTIONS = frozenset({Family.CONSENT, Family.OPT_OUT, Family.GUARDIAN_CONSENT, Family.DELETION_REQUESTED})

MISROUTED = ("the {what} is on another partition than its {field} hashes to (murmur2 of the id, as Java clients "
             "and `auditor produce` partition): the subject's facts and events must be keyed by the subject id and "
             "partitioned alike, or they never meet")


# ---------------------------------------------------------------- the start-up check

def check_copartitioned(md: Any, events: Iterable[str], facts: str, bootstrap: str) -> int:
    """The facts topic's partition count, once it is known to equal every event topic's."""
    if facts not in md.topics:
        raise ConfigError(
            f"ledger.dir is set but the facts topic {facts} does not exist on {bootstrap}. Create it with as many "
            f"partitions as the event topics (auditor topics create --config ...), or unset ledger.dir to run "
            f"without a subject ledger.")
    n = len(md.topics[facts].partitions)
    wrong = {e: len(md.topics[e].partitions) for e in events if e in md.topics and len(md.topics[e].partitions) != n}
    if wrong:
        listed = ", ".join(f"{e} has {k}" for e, k in sorted(wrong.items()))
        raise ConfigError(
            f"the facts topic {facts} has {n} partition(s) but {listed}: the ledger needs them co-partitioned. "
            f"A subject's facts and events are keyed by subject id and partitioned alike, so an instance holds "
            f"the facts of exactly the subjects whose events it audits only when the partition counts are equal. "
            f"Fix: recreate {facts} with {next(iter(wrong.values()))} partition(s) and produce the facts again "
            f"(auditor produce --facts), or give the event topics {n} partition(s); or unset ledger.dir.")
    return n


def store_path(cfg: Config) -> Path:
    """``ledger.dir/<instance_id>``: one store per instance, so instances can share a config."""
    assert cfg.ledger.dir is not None
    return cfg.ledger.dir / cfg.instance_id  # letters, digits, '.', '_', '-' (checked by the config)


# ---------------------------------------------------------------- metrics

#: why a fact from the facts topic is skipped (auditor.ledger.codec's DecodeError reasons): pre-labelled
FACT_REJECT_REASONS = ("undecodable", "unknown_schema", "oversize", "hostile_encoding", "missing_field", "bad_field",
                       "bad_subject_id", "misrouted")


class LedgerMetrics(NamedTuple):
    facts: Counter
    rejected: Counter
    corrections: Counter
    late: Counter
    beyond_window: Counter
    catch_up: Gauge
    logged_late: Counter
    predated: Counter

    @classmethod
    def build(cls, r: CollectorRegistry, packs: Iterable[str] = ()) -> LedgerMetrics:
        m = cls(
            facts=Counter("auditor_ledger_facts", "Subject facts applied to the instance's ledger", registry=r),
            rejected=Counter("auditor_ledger_facts_rejected", "Facts from the facts topic that could not be "
                             "decoded (skipped), by reason", ["reason"], registry=r),
            corrections=Counter("auditor_ledger_corrections", "CORRECTION records written after a late fact "
                                "changed what an audited decision read, by pack and whether the verdict changed",
                                ["pack", "verdict_changed"], registry=r),
            late=Counter("auditor_ledger_late_facts", "Facts that arrived after an audited event of their "
                         "subject at or after their effective time", registry=r),
            beyond_window=Counter("auditor_ledger_late_beyond_window", "Late facts effective before the "
                                  "correction window's horizon: corrections for them may be missing", registry=r),
            catch_up=Gauge("auditor_ledger_catch_up_seconds", "Time the last read of the facts partitions to "
                           "their end took", registry=r),
            logged_late=Counter("auditor_ledger_facts_logged_late", "Permissive facts (grants, opt-ins, ...) that "
                                "reached the facts topic more than 5 minutes after their stated recorded_at, by whose "
                                "clock stamped them (broker: in force only from the log time; producer: a claim, "
                                "counted only)", ["clock"], registry=r),
            predated=Counter("auditor_ledger_events_predated", "Events that reached their topic more than 5 minutes "
                             "after their occurred_at and escape a restrictive fact (a withdrawal, an opt-out, ...) "
                             "on record by then: judged at occurred_at, by whose clock stamped the event",
                             ["clock"], registry=r),
        )
        for clock in ("broker", "producer"):
            m.logged_late.labels(clock)
            m.predated.labels(clock)
        for pack in packs:
            for changed in ("true", "false"):
                m.corrections.labels(pack, changed)
        for reason in FACT_REJECT_REASONS:
            m.rejected.labels(reason)
        return m


# ---------------------------------------------------------------- reading the facts topic

class Pending(NamedTuple):
    """Facts applied to the store but not yet confirmed: partition -> highest offset, the facts applied,
    the clocks of the permissive facts among them logged late (counted once confirmed: a fact read again
    after a rewind or a restart is counted once) and, per partition, what bounds the log time of the
    facts after them (confirmed with them)."""

    high: dict[int, int]
    applied: list[Applied]
    logged_late: list[str]
    bounds: dict[int, LogBound]


class FactsReader:
    """A read_committed consumer of the facts topic outside any group, assigned by hand."""

    def __init__(self, cfg: Config, store: LedgerStore, admin: AdminClient, decoder: FactDecoder,
                 metrics: LedgerMetrics, pseudonymize: Callable[[str], str]) -> None:
        self.topic = cfg.topics.facts
        self.store, self.admin, self.decoder, self.metrics = store, admin, decoder, metrics
        self.pseudonymize = pseudonymize
        self.consumer = Consumer({**cfg.client_conf(), "group.id": f"auditor-ledger-{cfg.instance_id}",
                                  "client.id": f"auditor-ledger-{cfg.instance_id}",
                                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                                  "isolation.level": "read_committed", "enable.partition.eof": True,
                                  "fetch.wait.max.ms": 20})
        #: next offset to read, per assigned partition
        self.next: dict[int, int] = {}
        #: the facts topic's partition count: a fact on another partition than its subject's is refused
        self.partitions = 0
        #: facts scoped to names no loaded pack declares: logged once per name (auditor.ledger.vocabulary)
        self.vocabulary: UndeclaredScopes | None = None
        self._declared: set[Scope] = set()  # scopes seen whose names are all declared (bounded)
        #: per assigned partition, what bounds its next facts' log time from below (LogBound)
        self.bounds: dict[int, LogBound] = {}
        #: the auditor's clock (microseconds since the epoch): when it saw a partition's stable end
        self.now_us: Callable[[], int] = lambda: time.time_ns() // 1000
        #: producer-stamped facts read after broker-stamped ones in their partition (logged: first 10, every 1000th)
        self.relabelled = 0
        #: a person's withdrawals dated to take effect well after they were recorded (logged: first 10, every 1000th)
        self.dated_forward = 0
        #: the facts topic was seen configured LogAppendTime (LedgerFeed._check_facts_config)
        self.broker_stamped = False
        #: broker-stamped facts whose log time the auditor's reads raised by more than the lag (logged)
        self.read_late = 0
        #: per partition, the auditor's clock when its reads of the partition's end were last kept in the store
        self._kept: dict[int, int] = {}

    def _note_scope(self, scope: Scope, where: str) -> None:
        assert self.vocabulary is not None
        if self.vocabulary.declares(scope):
            if len(self._declared) < 4096:
                self._declared.add(scope)
            return
        new = self.vocabulary.check(scope, where)
        if new is not None:
            log.warning("subject facts scoped to a name no loaded pack declares", field=new.field, name=new.name,
                        first=new.first, packs=list(self.vocabulary.packs))

    def assign(self, partitions: set[int]) -> None:
        gone = [p for p in self.next if p not in partitions]
        if gone:
            self.consumer.incremental_unassign([TopicPartition(self.topic, p) for p in gone])
            self.keep_seen(gone)
            for p in gone:
                del self.next[p]
                self.bounds.pop(p, None)
        new = sorted(p for p in partitions if p not in self.next)
        tps = []
        for p in new:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=CALL_TIMEOUT_S,
                                                            cached=False)
            start = resume_from(self.store.high_offset(p), low, high)
            if start is None:
                log.warning("facts partition no longer holds what the store applied; restoring it from scratch",
                            partition=p, stored=self.store.high_offset(p), low=low, high=high)
                self.store.drop_partition(p)
                start = low
            if low > 0 and self.store.high_offset(p) < 0:  # restored from a topic that lost its first facts
                log.error("the facts partition no longer holds its first facts (retention or deleted records): the "
                          "ledger restored from it lacks them, their withdrawals, opt-outs and birth dates included",
                          topic=self.topic, partition=p, first_offset=low)
            self.next[p] = start
            self.bounds[p] = self.store.log_bound(p)
            tps.append(TopicPartition(self.topic, p, start))
        if tps:
            self.consumer.incremental_assign(tps)
            log.info("facts partitions assigned", partitions={tp.partition: tp.offset for tp in tps})

    def rewind(self, partitions: Iterable[int]) -> None:
        """Read again from the store's confirmed position (after a correction that did not commit)."""
        for p in partitions:
            start = self.store.high_offset(p) + 1
            self.next[p] = start
            # the broker time as confirmed; what the auditor saw of the partition's end stays true
            self.bounds[p] = self.store.log_bound(p)._replace(seen=self.bounds.get(p, NO_BOUND).seen)
            self.consumer.seek(TopicPartition(self.topic, p, start))

    def ends(self) -> dict[int, int]:
        """The last stable offset of each assigned partition, now."""
        if not self.next:
            return {}
        tps = {TopicPartition(self.topic, p): p for p in self.next}
        futures = self.admin.list_offsets({tp: OffsetSpec.latest() for tp in tps},
                                          isolation_level=IsolationLevel.READ_COMMITTED,
                                          request_timeout=CALL_TIMEOUT_S)
        return {tps[tp]: fut.result(CALL_TIMEOUT_S).offset for tp, fut in futures.items()}

    def read_some(self, timeout: float, collect: Callable[[int], bool], beat: Callable[[], None],
                  limit: int | None = None) -> tuple[Pending, bool]:
        """Read the assigned partitions towards their current end, applying facts ``CHUNK`` at a
        time, until the end or about ``limit`` facts (a long restore goes in rounds, each
        confirmed on its own). True when every partition is at its end. A read that makes no
        progress for ``timeout`` seconds raises :class:`TransientError`."""
        now = self.now_us()  # before the ends are asked: no later than the moment the broker gave each
        ends = self.ends()
        for p, end in ends.items():
            if p in self.bounds:
                self.bounds[p] = self.bounds[p].observed(end, now)
        pending = Pending({}, [], [], {})
        todo = {p for p, end in ends.items() if self.next.get(p, end) < end}
        # the reads kept in the store every KEEP_READS_US (atl2): kept only with a confirm or at a stop, a kill -9
        # lost them (the reads of a stalled end since the last confirm), and a grant held in an open transaction
        # then counted from its broker time
        keep = [p for p in ends if p in self.bounds and now - self._kept.get(p, -1) >= KEEP_READS_US]
        if keep:
            self.keep_seen(keep)
            for p in keep:
                self._kept[p] = now
        if not todo:
            return pending, True
        try:
            todo = self._read(ends, todo, timeout, pending, collect, beat, limit)
        except Exception:
            # facts applied but not confirmed are read (and checked for late effects) again: the reader's
            # position goes back to the store's (before, the next round confirmed them unchecked, atl)
            try:
                self.rewind([p for p in ends if p in self.next])
            except KafkaException as exc:  # not seekable now: assigned again from the store's position
                log.warning("facts partitions not rewound; assigned again", error=str(exc)[:300])
                self.assign(set())
            raise
        for p in ends:
            if p in self.next and self.next[p] - 1 > self.store.high_offset(p):
                pending.high[p] = max(pending.high.get(p, -1), self.next[p] - 1)
                self.bounds[p] = pending.bounds[p] = self.bounds[p].pruned(pending.high[p])
        return pending, not todo

    def _read(self, ends: dict[int, int], todo: set[int], timeout: float, pending: Pending,
              collect: Callable[[int], bool], beat: Callable[[], None], limit: int | None) -> set[int]:
        """read_some's loop: the partitions still short of their end when it stopped."""
        last_progress = time.monotonic()
        read, limit = 0, limit or ROUND
        blocks: dict[int, list[tuple[int, SubjectFact]]] = {p: [] for p in todo}
        stamps: dict[int, dict[int, Logged]] = {p: {} for p in todo}  # each fact's Kafka timestamp
        while todo and read < limit:
            if time.monotonic() - last_progress > timeout:
                raise TransientError(f"the facts partitions {sorted(todo)} of {self.topic} made no progress towards "
                                     f"their end for {timeout:.0f}s (ledger.catch_up_timeout_s)")
            msgs = self.consumer.consume(1000, 0.1)
            if msgs:
                last_progress = time.monotonic()
                read += len(msgs)
            for m in msgs:
                p = m.partition() or 0
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if p in self.next:
                            self.next[p] = max(self.next[p], m.offset() or 0)
                        continue
                    if err.fatal():
                        raise TransientError(f"reading {self.topic}: {err}")
                    log.warning("facts consumer error", error=str(err))
                    continue
                if p not in self.next:
                    continue
                offset = m.offset() or 0
                self.next[p] = offset + 1
                try:
                    fact = self.decoder.decode(m.value())
                    if self.partitions and p != subject_partition(fact.subject_id, self.partitions):
                        raise DecodeError(MISROUTED.format(what="fact", field="subject_id"), reason="misrouted")
                except DecodeError as exc:  # never quotes the payload
                    self.metrics.rejected.labels(exc.reason).inc()
                    log.warning("subject fact skipped: it does not decode", partition=p, offset=offset,
                                reason=exc.reason, error=str(exc)[:300])
                    continue
                block = blocks.setdefault(p, [])
                block.append((offset, fact))
                stamps.setdefault(p, {})[offset] = self._logged(m, p, offset, fact, pending)
                if len(block) >= CHUNK:
                    self._apply(p, block, pending, collect, stamps[p])
                    block.clear()
                    stamps[p] = {}
                    beat()
            todo = {p for p in todo if self.next.get(p, 0) < ends[p]}
        for p, block in blocks.items():
            if block:
                self._apply(p, block, pending, collect, stamps.get(p))
        return todo

    def _logged(self, m: Any, p: int, offset: int, fact: SubjectFact, pending: Pending) -> Logged:
        """The fact's Kafka timestamp, kept with it: a permissive fact is in force only from the broker's
        time less :data:`LOG_LAG_US` (auditor.ledger.asof.known_us). The broker's time is raised to when
        the auditor last saw the partition's stable end at or below the fact (a record written in a
        transaction left open is stamped when written, readable only once committed). A producer's time
        (``CreateTime``) after broker-stamped facts in the partition (the topic's timestamp type was set
        back for it) is replaced by that bound and the latest broker time before it (``LogTime.BOUND``).
        A permissive fact logged more than the lag after its stated recorded_at is counted, by whose clock
        bounds it, once confirmed."""
        kind, ms = m.timestamp()
        bound = self.bounds.get(p, NO_BOUND)
        stamped = ms is not None and ms >= 0 and kind in (LogTime.CREATE, LogTime.APPEND)
        logged: Logged
        if stamped and kind == LogTime.APPEND:
            self.bounds[p] = bound = bound._replace(broker_us=max(bound.broker_us, ms * 1000))
            logged = (max(ms * 1000, bound.seen_floor(offset)), LogTime.APPEND)
            if logged[0] - ms * 1000 > LOG_LAG_US:
                self._read_late(p, offset, logged[0] - ms * 1000)
        elif bound.broker_us >= 0 or (self.broker_stamped and bound.seen_floor(offset) >= 0):
            logged = (max(bound.broker_us, bound.seen_floor(offset)), LogTime.BOUND)
            self.relabelled += 1
            if self.relabelled <= 10 or self.relabelled % 1000 == 0:
                log.error("a subject fact stamped by its producer's clock follows facts the broker stamped: the facts "
                          "topic's message.timestamp.type was changed; it counts as logged no earlier than the facts "
                          "before it", topic=self.topic, partition=p, offset=offset, facts=self.relabelled)
        elif stamped:
            logged = (ms * 1000, LogTime(kind))
        else:
            return NOT_LOGGED
        family, value = FACT_FAMILY[fact.type]
        restrictive = RESTRICTIVE.get(family)
        if restrictive is not None and value is not restrictive and logged[0] - LOG_LAG_US > to_us(fact.recorded_at):
            pending.logged_late.append("producer" if logged[1] is LogTime.CREATE else "broker")
        elif value is restrictive and family in INSTRUCTIONS:
            self._dated_forward(p, offset, fact, logged)
        return logged

    def _read_late(self, p: int, offset: int, behind_us: int) -> None:
        """A fact the broker stamped more than the lag before the auditor last read its partition's end
        below it (atl2): it was held in a transaction (LedgerFeed._check_held_back), or the auditor's clock
        is ahead of the broker's, and then genuine grants are judged out of force: the auditor's clock
        shares the lag a grant is allowed. Logged: first 10, every 1000th."""
        self.read_late += 1
        if self.read_late <= 10 or self.read_late % 1000 == 0:
            log.error("a fact the broker stamped counts as logged only from the auditor's read of its partition's "
                      "end below it, well after its broker time: it was held in a transaction, or the auditor's "
                      "clock is ahead of the broker's (then synchronise them: genuine grants are judged out of force)",
                      topic=self.topic, partition=p, offset=offset, behind_s=behind_us // 1_000_000,
                      facts=self.read_late)

    def _dated_forward(self, p: int, offset: int, fact: SubjectFact, logged: Logged) -> None:
        """A person's withdrawal, opt-out or deletion request whose effective_at is more than the lag after
        the earliest time it is known to have existed (its recorded_at, or its log time when the broker's):
        it binds from that later effective_at (README: what the person asked for, or a date moved forward;
        the auditor cannot tell them apart), and is logged for an investigator (atl): first 10, every 1000th."""
        known = to_us(fact.recorded_at)
        if logged[1] in (LogTime.APPEND, LogTime.BOUND):
            known = min(known, logged[0])
        ahead = to_us(fact.effective_at) - known
        if ahead <= LOG_LAG_US:
            return
        self.dated_forward += 1
        if self.dated_forward <= 10 or self.dated_forward % 1000 == 0:
            log.warning("a withdrawal, opt-out or deletion request takes effect well after it was recorded or logged: "
                        "it binds from its effective_at (what the person asked for, or a date moved forward)",
                        topic=self.topic, partition=p, offset=offset, type=fact.type.value,
                        ahead_s=ahead // 1_000_000, facts=self.dated_forward)

    def _apply(self, p: int, block: list[tuple[int, SubjectFact]], pending: Pending,
               collect: Callable[[int], bool], logged: dict[int, Logged] | None = None) -> None:
        if self.vocabulary is not None:
            for offset, fact in block:
                if fact.scope is not None and fact.scope not in self._declared:
                    self._note_scope(fact.scope, f"{self.topic}/{p}@{offset}")
        result = self.store.apply(p, block, self.pseudonymize, collect=collect(p), advance=False, logged=logged)
        self.metrics.facts.inc(result.written)
        pending.applied.extend(result.applied)

    def keep_seen(self, partitions: Iterable[int]) -> None:
        """Keep in the store what the auditor last saw of these partitions' ends, though no fact came since
        the last confirmed: a grant held in a transaction across a restart or a rebalance is bounded by the
        last read before it, not by the last read that found a fact."""
        self.store.keep_seen({p: bound.pruned(self.store.high_offset(p)).seen
                              for p in partitions if (bound := self.bounds.get(p)) is not None})

    def close(self) -> None:
        try:
            self.keep_seen(list(self.next))
        except AuditorError as exc:
            log.warning("the facts partitions' last reads not kept", error=str(exc)[:300])
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("facts consumer close failed", error=str(exc))


# ---------------------------------------------------------------- the feed

class IdentityPseudonyms:
    """The pseudonymizer of a CORRECTION record: its event, rebuilt from the corrected record,
    already carries pseudonyms (under ``key_id``)."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id

    def __call__(self, identifier: str) -> str:
        return identifier


class LedgerFeed:
    """The subject ledger of one daemon instance (see the module docstring)."""

    def __init__(self, cfg: Config, processor: BatchProcessor, registry: CollectorRegistry,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.cfg = cfg
        self.processor = processor
        self.pseudonymize = processor.pseudonymizer
        self.store = LedgerStore(store_path(cfg), self.pseudonymize.key_id)
        if self.store.reset_reason:
            log.warning("ledger store emptied; it is restored from the facts topic", reason=self.store.reset_reason)
        self.index = DecisionIndex(self.store, window=timedelta(seconds=cfg.ledger.correction_window_s),
                                   max_bytes=cfg.ledger.index_max_bytes)
        self.judging = StoreJudge(self.store, self.pseudonymize)
        self.metrics = LedgerMetrics.build(registry, processor.packs)
        self.decoder = FactDecoder()
        self.clock = clock
        self.reader: FactsReader | None = None
        self.partitions = 0
        #: chains whose decisions are indexed here (from the trail, on their assignment; then as committed)
        self.indexed: set[tuple[str, int]] = set()
        #: decisions indexed from the audit topic since start (rebuilt or resumed chains)
        self.read_back = 0
        #: events counted in auditor_ledger_events_predated_total (the first ten and every 1000th logged)
        self.predated = 0
        #: the highest offset counted as predated per event topic and partition: a batch judged again (its
        #: transaction aborted) counts none of its events twice
        self._predated_at: dict[tuple[str, int], int] = {}
        #: chains resumed from their markers, not yet rechecked: the seqs indexed, the marker to set after
        self._resumed: dict[tuple[str, int], tuple[set[int], int]] = {}
        #: the CORRECTION records last sealed, by the (chain id, seq) they correct: their index payloads
        self._written: dict[tuple[str, int], bytes] = {}
        processor.ledger = self
        self._partitions_checked = time.monotonic()  # checked at start
        #: the facts topic was seen configured LogAppendTime (at start or a partition check; never unset)
        self.broker_stamped = False
        #: facts partitions whose stable offset is below their end: (stable offset, since (monotonic), logged)
        self._held_back: dict[int, tuple[int, float, bool]] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self, admin: AdminClient, md: Any) -> None:
        t = self.cfg.topics
        self.partitions = check_copartitioned(md, t.events, t.facts, self.cfg.kafka.bootstrap_servers)
        recorded = self.store.partitions(self.partitions)
        if recorded != self.partitions:  # the topics were given more partitions after facts were recorded
            raise ConfigError(
                f"the facts topic {t.facts} has {self.partitions} partition(s) but the ledger store "
                f"{self.store.path} was built when it had {recorded} partition(s). Kafka leaves a record where it "
                f"was written: a subject whose id now hashes to another partition has its older facts on the old "
                f"one and its new events on the new one, where they would be judged without them. Fix: recreate "
                f"{t.facts} with {self.partitions} partition(s) and produce the facts again (auditor produce "
                f"--facts), then delete {self.store.path} (it is rebuilt from the topic); or unset ledger.dir.")
        self._check_topic_id(admin)
        self._check_facts_config(admin)
        self.reader = FactsReader(self.cfg, self.store, admin, self.decoder, self.metrics, self.pseudonymize)
        self.reader.partitions = self.partitions
        self.reader.now_us = lambda: to_us(self.clock())
        self.reader.broker_stamped = self.broker_stamped
        self.reader.vocabulary = UndeclaredScopes(self.processor.packs.values())
        log.info("subject ledger on", facts_topic=t.facts, partitions=self.partitions, store=str(self.store.path),
                 positions=self.store.positions())

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.store.close()

    def _check_facts_config(self, admin: AdminClient, *, warn: bool = True) -> None:
        """At start (``warn``): warn when the facts topic lacks what ``auditor topics create`` gives it
        (atl): the broker's log time (else a grant dated back in both its times is taken on its
        recorded_at) and infinite retention (else a store rebuilt from the topic misses the withdrawals
        Kafka deleted). At start and at each partition check: once the topic is seen configured
        ``LogAppendTime``, the reader counts a producer-stamped fact as logged no earlier than when it
        last saw its partition's stable end below it, even in a partition with no broker-stamped fact yet
        (the topic set back to CreateTime for it)."""
        topic = self.cfg.topics.facts
        self.broker_stamped = self.broker_stamped or self.store.broker_stamped()  # seen before (even if not now)
        try:
            conf = describe(admin, [topic], CALL_TIMEOUT_S).get(topic, {})
        except BrokerError as exc:
            if warn:
                log.warning("the facts topic's configuration not checked", error=str(exc)[:300])
            return
        if self.store.broker_stamped(conf.get("message.timestamp.type", "").strip() == "LogAppendTime"):
            # never unset, kept in the store (atl2: a restart while the topic is set back to CreateTime does not
            # forget it): a producer's clock after it is a claim to bound
            self.broker_stamped = True
            if self.reader is not None:
                self.reader.broker_stamped = True
        lacks = facts_findings(topic, conf)
        if warn and lacks:
            log.warning("the facts topic lacks what `auditor topics create` sets", findings=lacks,
                        fix=facts_fix_command(topic, self.cfg.kafka.bootstrap_servers))

    def _check_topic_id(self, admin: AdminClient) -> None:
        """The facts topic is still the one the store read its facts from (attrt). Deleted and created
        again under the same name, with as many partitions: the store's positions are the old topic's
        offsets, and the new topic's facts below them (a withdrawal produced again) would never be read,
        nor at a restart once the new topic is longer than the old one was. Raises ConfigError (exit 2).
        A broker that does not answer is asked again at the next check."""
        topic = self.cfg.topics.facts
        try:
            found = admin.describe_topics(TopicCollection([topic]))[topic].result(CALL_TIMEOUT_S)
        except (KafkaException, TimeoutError) as exc:
            log.warning("the facts topic's id not checked this time", error=str(exc)[:300])
            return
        current = str(found.topic_id)
        recorded = self.store.topic_id(current)
        if recorded != current:
            raise ConfigError(
                f"the facts topic {topic} was deleted and created again (topic id {recorded} when the ledger "
                f"store {self.store.path} read its facts, {current} now): the store's positions are offsets of "
                f"the old topic, so the new topic's facts below them would never be read. Fix: delete "
                f"{self.store.path} (it is rebuilt from the topic) and start again; or unset ledger.dir.")

    def _check_partitions(self) -> None:
        """Every ``PARTITIONS_CHECK_S``: the facts and event topics still have the partition count the
        daemon started with. Facts topic given more partitions while the daemon runs: the facts of the
        subjects that now hash to a new partition are written there, and no instance reads it (its events
        are still on the old partitions), so their withdrawals were never met, silently, until a restart
        (attops). Raises ConfigError (exit 2), as :func:`check_copartitioned` at start."""
        now = time.monotonic()
        if now - self._partitions_checked < PARTITIONS_CHECK_S or self.reader is None:
            return
        self._partitions_checked = now
        t = self.cfg.topics
        try:
            md = self.reader.admin.list_topics(timeout=CALL_TIMEOUT_S)
        except KafkaException as exc:  # asked again next time
            log.warning("partition counts not checked this time", error=str(exc)[:300])
            return
        n = check_copartitioned(md, t.events, t.facts, self.cfg.kafka.bootstrap_servers)
        self._check_topic_id(self.reader.admin)
        self._check_facts_config(self.reader.admin, warn=False)
        self._check_held_back(now)
        if n != self.partitions:
            raise ConfigError(
                f"the facts topic {t.facts} and the event topics now have {n} partition(s); the daemon started "
                f"with {self.partitions}. Kafka leaves a record where it was written: a subject whose id now "
                f"hashes to another partition has its older facts on the old one. Fix: recreate {t.facts} with "
                f"{n} partition(s) and produce the facts again (auditor produce --facts), then delete "
                f"{self.store.path} (it is rebuilt from the topic); or unset ledger.dir.")

    def _check_held_back(self, now: float) -> None:
        """At each partition check: a facts partition whose last stable offset has stayed below its end, at
        the same offset, for more than HELD_BACK_S is logged (once per stall): a transaction open on the facts
        topic holds back every fact after its first record, withdrawals included (read_committed), and the
        grants behind it count only from when they are readable (atl). Kafka aborts it after the producer's
        transaction.timeout.ms (at most the broker's transaction.max.timeout.ms, 15 minutes by default)."""
        assert self.reader is not None
        if not self.reader.next:
            return
        tps = {TopicPartition(self.cfg.topics.facts, p): p for p in self.reader.next}
        try:
            ends = {}
            for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
                futures = self.reader.admin.list_offsets({tp: OffsetSpec.latest() for tp in tps},
                                                         isolation_level=level, request_timeout=CALL_TIMEOUT_S)
                ends[level] = {tps[tp]: fut.result(CALL_TIMEOUT_S).offset for tp, fut in futures.items()}
        except (KafkaException, TimeoutError) as exc:
            log.warning("the facts partitions' stable offsets not checked this time", error=str(exc)[:300])
            return
        for p, stable in ends[IsolationLevel.READ_COMMITTED].items():
            high = ends[IsolationLevel.READ_UNCOMMITTED].get(p, stable)
            held = self._held_back.get(p)
            if stable >= high:
                self._held_back.pop(p, None)
            elif held is None or held[0] != stable:
                self._held_back[p] = (stable, now, False)
            elif not held[2] and now - held[1] > HELD_BACK_S:
                self._held_back[p] = (stable, held[1], True)
                log.warning("a transaction open on the facts topic holds back the facts after it: withdrawals are read "
                            "late (then corrected) and grants count only from when they are readable",
                            topic=self.cfg.topics.facts, partition=p, stable_offset=stable, end=high,
                            held_s=round(now - held[1]))

    # ------------------------------------------------------------------ the join (processor)
    def judge(self, event: Event, evaluator: MemoEvaluator, partition: int, msg: Any = None) -> Judged:
        """``event`` judged with its subject's facts in ``partition``. An event on another partition
        than its subject id hashes to is refused (``misrouted``, a dead letter): its subject's facts
        are not there, and the producing system, the one audited, would choose which of them its
        events meet (attd)."""
        if self.partitions and partition != subject_partition(event.subject.id, self.partitions):
            raise DecodeError(MISROUTED.format(what="event", field="subject.id"), reason="misrouted")
        judged = self.judging.judge(event, evaluator.compiled, partition, _decide(evaluator))
        if judged.reads and msg is not None:
            self._check_predated(event, partition, msg, judged)
        return judged

    def _check_predated(self, event: Event, partition: int, msg: Any, judged: Judged) -> None:
        """An event whose Kafka time is more than EVENT_LAG_US after its occurred_at, and whose subject had
        a restrictive fact in force by then that its occurred_at escapes (judging.escaped): counted by
        whose clock stamped the event, and logged (its position, never its payload). Its verdict stands:
        a delayed event is not a violation, and the auditor cannot tell one from an event dated back."""
        stamp = getattr(msg, "timestamp", None)
        if stamp is None:
            return
        kind, ms = stamp()
        if kind not in (LogTime.CREATE, LogTime.APPEND) or ms is None or ms * 1000 - EVENT_LAG_US <= to_us(
                event.occurred_at):
            return
        families = escaped(self.store, partition, self.pseudonymize(event.subject.id), judged.reads,
                           to_us(event.occurred_at), ms * 1000)
        if not families:
            return
        where, offset = (msg.topic(), partition), msg.offset()
        if offset is not None:
            if offset <= self._predated_at.get(where, -1):
                return  # counted when this batch was judged before
            self._predated_at[where] = offset
        clock = "broker" if kind == LogTime.APPEND else "producer"
        self.metrics.predated.labels(clock).inc()
        self.predated += 1
        if self.predated <= 10 or self.predated % 1000 == 0:
            log.warning("an event logged long after its occurred_at escapes a restrictive fact on record by then: "
                        "judged at occurred_at", topic=msg.topic(), partition=partition, offset=msg.offset(),
                        logged_after_s=round((ms * 1000 - to_us(event.occurred_at)) / 1e6), clock=clock,
                        questions=[f.value for f in families], events=self.predated)

    # ------------------------------------------------------------------ before and after a batch
    def before_batch(self, restored: Iterable[tuple[str, int]], commit: Callable[[BatchResult], bool],
                     beat: Callable[[], None]) -> bool:
        """Read the facts of the restored partitions to their end; correct decisions late facts
        changed; index the decisions of chains new to this instance from the trail and correct
        those the facts changed since. False when a correction's transaction did not commit (the
        caller retries)."""
        assert self.reader is not None
        self._check_partitions()
        owned = set(restored)
        for t, p in sorted(self.indexed - owned):  # leaving: what its facts partition had been checked through
            self.index.left(p, chainid.chain_id(t, p), self.store.high_offset(p))
            self._resumed.pop((t, p), None)
        self.indexed &= owned  # a chain that leaves is indexed again from the trail when it comes back
        t0 = time.monotonic()
        self.reader.assign({p for _, p in owned})
        since_ms = self._window_start_ms()
        resumable = {c: m for c in sorted(owned - self.indexed) if (m := self._resumable(c, since_ms)) is not None}
        if resumable:
            self._resume_from_trail(resumable, since_ms, beat)
        indexed_partitions = {p for _, p in self.indexed}
        collect = (lambda p: p in indexed_partitions) if self.index.count() > 0 else (lambda p: False)
        while True:
            pending, done = self.reader.read_some(self.cfg.ledger.catch_up_timeout_s, collect, beat)
            if not self._settle(pending, commit):
                return False
            if done:
                break
            beat()  # a long restore is progress
        self.metrics.catch_up.set(time.monotonic() - t0)
        if self._resumed and not self._recheck_resumed(commit, beat):
            return False
        new = owned - self.indexed
        return not new or self._index_from_trail(new, commit, beat)

    def _settle(self, pending: Pending, commit: Callable[[BatchResult], bool]) -> bool:
        """Correct what ``pending``'s facts changed, then confirm them; False if the correction
        did not commit (the facts are read again). Only chains already indexed here are corrected:
        a chain new to this instance is checked against every fact when it is indexed from the trail."""
        assert self.reader is not None
        if not pending.high:
            return True
        corrections: list[Correction] = []
        if pending.applied:
            report = self.index.affected(pending.applied)
            self._count(report)
            corrections = [c for c in report.corrections if chainid.source_of(c.chain_id) in self.indexed]
        if corrections and not self._correct(corrections, commit, pending.high):
            self.reader.rewind(pending.high)
            return False
        for p, high in pending.high.items():
            self.store.confirm(p, high, pending.bounds.get(p))
        for clock in pending.logged_late:
            self.metrics.logged_late.labels(clock).inc()
        return True

    def _correct(self, corrections: list[Correction], commit: Callable[[BatchResult], bool],
                 through: dict[int, int]) -> bool:
        """Write the CORRECTION records of ``corrections`` in a transaction of their own; once it
        committed, count them and store their new answers in the index."""
        result, labels = self.corrections(corrections, through)
        if not commit(result):
            return False
        for label in labels:
            self.metrics.corrections.labels(*label).inc()
        self.index.acknowledge(corrections, self._written)
        log.info("late facts corrected audited decisions", corrections=len(corrections),
                 verdicts_changed=sum(1 for _, changed in labels if changed == "true"))
        return True

    # ------------------------------------------------------------------ the index, from the trail
    def _window_start_ms(self) -> int:
        return int((self.clock().timestamp() - self.cfg.ledger.correction_window_s) * 1000)

    def _resumable(self, chain: tuple[str, int], since_ms: int) -> Marker | None:
        """The chain's marker when its local index entries can be resumed: it was indexed here
        within the window, and no fact of its partition was applied here since it left (none was
        checked against its entries); else None (indexed again from the trail in full)."""
        t, p = chain
        marker = self.index.marker(p, chainid.chain_id(t, p))
        if marker is None or marker.ms < since_ms:
            return None
        head = self.processor.heads.get(chainid.chain_id(t, p))
        if head is None or marker.seq >= head.size:
            return None  # beyond the chain as restored (a marker a forged record advanced before att12)
        if marker.left is not None and marker.left != self.store.high_offset(p):
            return None
        return marker

    def _resume_from_trail(self, chains: dict[tuple[str, int], Marker], since_ms: int,
                           beat: Callable[[], None]) -> None:
        """Chains whose local entries are still good (a restart, or a partition back with no fact
        applied since it left): index only the records written after the marker's seq (other
        instances' decisions and corrections, or ours committed but not indexed before a crash),
        before the facts are read, so the facts read now are checked against every entry; those
        records are asked again after the facts (:meth:`_recheck_resumed`)."""
        routing = self.processor.routing
        by_audit: dict[int, dict[str, tuple[tuple[str, int], Marker]]] = {}
        for (t, p), marker in chains.items():
            by_audit.setdefault(chainid.audit_partition(p, routing.audit_partitions), {})[
                chainid.chain_id(t, p)] = ((t, p), marker)
        t0 = time.monotonic()
        read = 0
        for audit_partition, wanted in sorted(by_audit.items()):
            after = {chain: m.seq for chain, (_, m) in wanted.items()}
            start_ms = max(since_ms, min(m.ms for _, m in wanted.values()) - RESUME_SKEW_MS)
            n, seen, top = self._read_back(routing.audit_topic, audit_partition, set(wanted), start_ms, beat, after)
            read += n
            for chain, (key, m) in wanted.items():
                self._resumed[key] = (seen.get(chain, set()), max(m.seq, top.get(chain, -1)))
        self.indexed |= set(chains)
        log.info("decision index resumed from the audit topic", chains=sorted(f"{t}/{p}" for t, p in chains),
                 decisions=read, seconds=round(time.monotonic() - t0, 3))

    def _recheck_resumed(self, commit: Callable[[BatchResult], bool], beat: Callable[[], None]) -> bool:
        """Ask the decisions indexed by :meth:`_resume_from_trail` again, against the facts now read;
        then advance the chains' markers past the records read."""
        keys = {(p, chainid.chain_id(t, p)) for t, p in self._resumed}
        only = {(chainid.chain_id(t, p), seq) for (t, p), (seqs, _) in self._resumed.items() for seq in seqs}
        corrections: list[Correction] = []
        if only:
            report = self.index.recheck(keys, beat, only=only)
            if report.late_facts:
                self.metrics.late.inc(report.late_facts)
            corrections = list(report.corrections)
            if corrections and not self._correct(corrections, commit, {}):
                return False
        self.index.mark({(p, chainid.chain_id(t, p)): top for (t, p), (_, top) in self._resumed.items()})
        if corrections:
            log.info("decisions resumed from the trail corrected", corrections=len(corrections))
        self._resumed.clear()
        return True

    def _index_from_trail(self, chains: set[tuple[str, int]], commit: Callable[[BatchResult], bool],
                          beat: Callable[[], None]) -> bool:
        """Index the recent decisions of ``chains`` (newly restored here) from their records in the
        audit topic, then correct those whose answers the facts, now read to their end, change.

        The trail is the durable copy of every decision: whichever instance made it (before a
        rebalance moved the partition here), and whether or not the instance that made it lived to
        index it (a crash between the batch's commit and its index write). A chain's records are
        read back from the first written within ``ledger.correction_window_s`` (by the records'
        timestamps); a CORRECTION supersedes the answers of the decision it corrects. The local
        entries of these chains are dropped first (another instance may have corrected them)."""
        routing = self.processor.routing
        keys = {(p, chainid.chain_id(t, p)) for t, p in chains}
        self.index.forget_chains(keys)
        by_audit: dict[int, set[str]] = {}
        for p, chain in keys:
            by_audit.setdefault(chainid.audit_partition(p, routing.audit_partitions), set()).add(chain)
        since_ms = self._window_start_ms()
        indexed = 0
        tops: dict[str, int] = {}
        t0 = time.monotonic()
        for audit_partition, wanted in sorted(by_audit.items()):
            n, _, top = self._read_back(routing.audit_topic, audit_partition, wanted, since_ms, beat, {})
            indexed += n
            tops.update(top)
        report = self.index.recheck(keys, beat)
        if report.late_facts:
            self.metrics.late.inc(report.late_facts)
        corrections = list(report.corrections)
        if corrections and not self._correct(corrections, commit, {}):
            return False  # indexed again (the same entries) on the next try
        self.index.mark({(p, chain): tops[chain] for p, chain in keys if chain in tops})
        self.indexed |= chains
        log.info("decision index rebuilt from the audit topic", chains=sorted(c for _, c in keys), decisions=indexed,
                 corrections=len(corrections), seconds=round(time.monotonic() - t0, 3))
        return True

    def _read_back(self, topic: str, partition: int, wanted: set[str], since_ms: int, beat: Callable[[], None],
                   after: dict[str, int]) -> tuple[int, dict[str, set[int]], dict[str, int]]:
        """Index the decisions that read the ledger among ``wanted`` chains' records in one audit
        partition with a seq past ``after`` (chain -> seq), from the first record at or after
        ``since_ms`` to the last committed one. Chain markers are left alone (the caller advances
        them once the records are rechecked). Returns how many were indexed, the seqs they are
        indexed under per chain, and the highest seq read per chain.

        Only records of the chain itself are indexed: anyone who may write to the audit topic can
        append a record that names the chain, with a correct seq, link and hash (att12). A record
        is the chain's only if it is on the path of ``prev_hash`` links that ends at the chain's
        head as restored here (its signed checkpoint's). The first pass walks that path back from
        the head, reading the partition backwards a window at a time (:meth:`_walk_back`): it
        keeps one window and the offsets of the chain's own records, so a flood of forged records
        costs reading time, not memory (before, every well-formed record below the head was kept
        while reading: attd). The second pass indexes those records only."""
        consumer = Consumer({**self.cfg.client_conf(), "group.id": f"auditor-ledger-index-{self.cfg.instance_id}",
                             "enable.auto.commit": False, "enable.auto.offset.store": False,
                             "isolation.level": "read_committed", "enable.partition.eof": True,
                             "fetch.wait.max.ms": 20})
        batch: list[DecisionReads] = []
        seen: dict[str, set[int]] = {}
        top: dict[str, int] = {}
        indexed = 0
        try:
            (found,) = consumer.offsets_for_times([TopicPartition(topic, partition, max(since_ms, 0))],
                                                  timeout=CALL_TIMEOUT_S)
            if found.error is not None:
                raise TransientError(f"cannot find where to read {topic}/{partition} back from: {found.error}")
            if found.offset < 0:
                return 0, seen, top  # nothing written since: no decision to index
            ours = self._walk_back(consumer, topic, partition, found.offset, wanted, after, beat)
            if not ours:
                return 0, seen, top
            for m in self._scan(consumer, topic, partition, min(ours), beat, until=max(ours)):
                offset = m.offset() or 0
                if offset not in ours:
                    continue
                value = m.value()
                chain, seq = ours[offset]
                top[chain] = max(top.get(chain, -1), seq)
                reads = self._reads_of(value)
                if reads is not None:
                    batch.append(reads)
                    seen.setdefault(chain, set()).add(reads.seq)
                if len(batch) >= READ_BACK_CHUNK:
                    indexed += self._index_read_back(batch)
                    batch = []
                    beat()
            if batch:
                indexed += self._index_read_back(batch)
            return indexed, seen, top
        except KafkaException as exc:
            raise TransientError(f"reading {topic}/{partition} back to index decisions: {exc}") from exc
        finally:
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("audit read-back consumer close failed", error=str(exc))

    def _walk_back(self, consumer: Consumer, topic: str, partition: int, start: int, wanted: set[str],
                   after: dict[str, int], beat: Callable[[], None]) -> dict[int, tuple[str, int]]:
        """The offsets at or after ``start`` of the records on each wanted chain's path of links back
        from its head here, past ``after``'s seq (offset -> (chain, seq)). The partition is read
        backwards from its last stable offset (the head lies below it: the restore waited for
        that), ``WALK_WINDOW`` messages at a time; in a window, from its last message to its first,
        a record is the chain's when its recomputed hash is the one the path expects next: the
        head's, then each record's ``prev_hash``. A copy of a record appended again later is met
        only while the path expects a later record, so it is passed by (att12's replay). Records
        that name a chain but are not on its path are counted and logged, never kept."""
        assert self.reader is not None
        expect: dict[str, tuple[bytes, int]] = {}
        for chain in wanted:
            head = self.processor.heads.get(chain)
            if head is not None and head.size - 1 > after.get(chain, -1):
                expect[chain] = (head.head_hash, head.size - 1)
        named = dict.fromkeys(wanted, 0)
        linked = dict.fromkeys(wanted, 0)
        ours: dict[int, tuple[str, int]] = {}
        end, _ = stable_offsets(self.reader.admin, topic, partition, CALL_TIMEOUT_S)
        while expect and end > start:
            begin = max(start, end - WALK_WINDOW)
            # What the path needs of each record that names a wanted chain, its hash checked as it is read:
            # a window keeps no message (anyone who may write to the audit topic can append 2,000 of up
            # to its max.message.bytes: ~2 GiB kept per window before, attops)
            window: list[tuple[int, str, int, bytes, bytes, bool]] = []
            for m in self._scan(consumer, topic, partition, begin, beat, until=end - 1):
                value = m.value() or b""
                try:
                    frame = next(iter_frames(value, 1))
                except Exception:  # noqa: BLE001 - not a record of ours: the chain restore reports it
                    continue
                chain = frame.chain_id
                if chain not in named or frame.seq <= after.get(chain, -1):
                    continue
                record_hash = bytes(frame.record_hash)
                sound = frame.end == len(value) and hash_record_bytes(value[:-32]) == record_hash
                window.append((m.offset() or 0, chain, frame.seq, record_hash, bytes(frame.prev_hash), sound))
            for offset, chain, seq, record_hash, prev_hash, sound in reversed(window):
                named[chain] += 1
                hit = expect.get(chain)
                if hit is None or seq != hit[1] or record_hash != hit[0] or not sound:
                    continue
                ours[offset] = (chain, seq)
                linked[chain] += 1
                if seq - 1 > after.get(chain, -1):
                    expect[chain] = (prev_hash, seq - 1)
                else:
                    del expect[chain]
            end = begin
            beat()
        for chain in wanted:
            if named[chain] > linked[chain]:
                log.error("records in the audit topic name this chain but are not on it (forged or copied): "
                          "not indexed", chain=chain, records=named[chain] - linked[chain], indexed=linked[chain])
        return ours

    def _scan(self, consumer: Consumer, topic: str, partition: int, start: int, beat: Callable[[], None],
              until: int | None = None) -> Iterator[Any]:
        """The committed messages of one partition from ``start`` to its end (or to offset ``until``)."""
        timeout = self.cfg.ledger.catch_up_timeout_s
        consumer.assign([TopicPartition(topic, partition, start)])
        try:
            last_progress = time.monotonic()
            n, count = 0, 16
            msgs: list[Any] = []
            while True:
                if time.monotonic() - last_progress > timeout:
                    raise TransientError(f"reading {topic}/{partition} back to index decisions made no progress "
                                         f"for {timeout:.0f}s (ledger.catch_up_timeout_s)")
                msgs = []  # the last batch is not held while the next is taken
                msgs = consumer.consume(count, 0.1)
                if msgs:
                    last_progress = time.monotonic()
                    largest = max([_weight(m) for m in msgs])
                    count = max(1, min(1000, SCAN_BYTES // max(largest, 1)))
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            return
                        raise TransientError(f"reading {topic}/{partition} back: {err}")
                    if until is not None and (m.offset() or 0) > until:
                        return
                    yield m
                    n += 1
                    if n % 20_000 == 0:
                        beat()
                    if until is not None and (m.offset() or 0) == until:
                        return
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.unassign()

    def _index_read_back(self, batch: list[DecisionReads]) -> int:
        n = self.index.record(batch, marks={})
        self.read_back += n
        return n

    def _reads_of(self, value: bytes | None) -> DecisionReads | None:
        """What a decision record (or a CORRECTION, under the seq it corrects) read from the
        ledger: its questions asked again by the join, answered from the record's own ledger reads
        (a question the record does not list had no fact to answer it), so exactly what the decision
        read. None for a record of another chain, a rejection, or a decision that read nothing."""
        if not value:
            return None
        try:
            record = record_from_bytes(value)
        except Exception:  # noqa: BLE001 - not a record of ours: the chain restore reports it
            return None
        lf = record.ledger
        if lf is None or record.decision is None or record.facts is None:
            return None
        try:
            event = record_to_event(record)
            evaluator = self.processor.evaluators.get(event.policy_id)
            if evaluator is None:
                return None  # its pack is no longer loaded: nothing to judge it again with
            judged = self.judging.join_for(evaluator.compiled).judge(event, RecordedView(lf, event.occurred_at),
                                                                     _decide(evaluator))
        except Exception as exc:  # noqa: BLE001 - one record never stops the index (logged, class only)
            log.error("an audited decision cannot be indexed for late facts", chain=record.chain_id, seq=record.seq,
                      error_class=type(exc).__name__)
            return None
        if not judged.reads:
            return None
        seq = lf.corrects.seq if lf.corrects is not None else record.seq
        return DecisionReads(record.source.partition or 0, record.facts.subject_pseudonym, to_us(event.occurred_at),
                             record.chain_id, seq, event.event_id, judged.reads, bytes(value), lf.through_offset)

    def after_commit(self, result: BatchResult) -> None:
        if result.ledger_reads:
            self.index.record(result.ledger_reads)

    def _count(self, report: LateReport) -> None:
        if report.late_facts:
            self.metrics.late.inc(report.late_facts)
        if report.beyond_window:
            self.metrics.beyond_window.inc(report.beyond_window)
            log.warning("late facts older than the correction window: decisions they change may stay uncorrected",
                        facts=report.beyond_window, window_s=self.cfg.ledger.correction_window_s)

    # ------------------------------------------------------------------ corrections
    def corrections(self, found: list[Correction], through: dict[int, int] | None = None
                    ) -> tuple[BatchResult, list[tuple[str, str]]]:
        """The CORRECTION records of ``found``, sealed into their chains (working heads).
        ``through``: per partition, the highest fact offset applied but not yet confirmed (the late
        facts themselves): the record's ``through_offset`` covers what its answers read."""
        out = BatchResult()
        labels: list[tuple[str, str]] = []
        self._written = {}
        now = self.clock()
        p = self.processor
        for c in found:
            try:
                old = record_from_bytes(c.payload)
                event = record_to_event(old)
                evaluator = p.evaluators.get(event.policy_id)
                if evaluator is None or old.decision is None:
                    raise AuditorError("the corrected record's pack is no longer loaded")
                judged = self.judging.judge(event, evaluator.compiled, c.partition, _decide(evaluator),
                                            pseudonym=c.pseudonym)
            except Exception as exc:  # noqa: BLE001 - one correction never stops the feed (logged, class only)
                log.error("a late fact changed an audited decision that cannot be judged again",
                          chain=c.chain_id, seq=c.seq, error_class=type(exc).__name__)
                continue
            cause = tuple(sorted({r.offset for r in c.cause}))
            ledger = judged.ledger._replace(corrects=CorrectedRecord(c.chain_id, c.seq, cause),
                                            through_offset=max(judged.ledger.through_offset,
                                                               (through or {}).get(c.partition, -1)))
            record = build_record(event, judged.decision, old.source, IdentityPseudonyms(old.pseudonym_key_id),
                                  p.instance_id, now, digest=old.input_digest, ledger=ledger,
                                  record_type=RecordType.CORRECTION)
            seq, record_hash = p.append_record(out, record)
            self._written[(c.chain_id, c.seq)] = out.outgoing[-1].value  # the sealed record (its index payload)
            changed = judged.decision.verdict.value != old.decision.verdict.value
            labels.append((evaluator.compiled.id, "true" if changed else "false"))
            if judged.decision.verdict is Verdict.VIOLATION:  # the violations topic hears of it too
                out.outgoing.append(p._violation_message(judged.decision, record, seq, record_hash, old.source))
        return out, labels


def _weight(m: Any) -> int:
    """What a consumed message holds: its value, key and headers (each up to max.message.bytes)."""
    headers: list[tuple[str, bytes | None]] = m.headers() or []
    return len(m.value() or b"") + len(m.key() or b"") + sum([len(k) + len(v or b"") for k, v in headers])


def _decide(evaluator: MemoEvaluator) -> Callable[[Event], Decision]:
    return lambda e: evaluator(e)[0]
