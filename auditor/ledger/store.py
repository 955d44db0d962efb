"""The embedded on-disk ledger of one auditor instance (LMDB).

It holds every fact of the subjects in the partitions the instance has been assigned, keyed by
(partition, subject pseudonym, effective time, recorded time, offset), so one subject's history
is one short range scan, already in precedence order. Raw subject ids never reach it: facts are
stored under the keyed HMAC pseudonym the trail uses (fact ids and service ids, which producers
often build from subject ids, are kept only as keyed digests: :class:`IdHider`) (so ``auditor replay``, which only has
pseudonyms, can ask the ledger too), and the store remembers the pseudonym key id; opened with
another key, it starts empty and is rebuilt from the facts topic, which is the source of truth.

Per partition the store records the highest offset applied in the same transaction as the facts,
so a restore resumes where the last one stopped (:func:`resume_from` checks the topic still has
that range). Memory does not grow with subjects: the data is in the memory-mapped file, whose
pages the kernel reclaims; the process keeps no per-subject state.

Layout (LMDB named databases):

=============  ===========================================================  ==========================
``facts``      partition u32 | pseudonym 16 B | effective | recorded | offset   the fact + log time, JSON
``meta``       ``format``, ``key_id``, ``partitions``, ``topic_id``, ``hw`` + p.  text
               ``lb`` + p.: the partition's :class:`LogBound`                JSON
               ``stamped``: the facts topic was seen ``LogAppendTime``      ``1``
``decisions``  see :mod:`auditor.ledger.late`
=============  ===========================================================  ==========================
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta
from hashlib import blake2b
from pathlib import Path
from typing import Any, NamedTuple

import lmdb

from auditor.errors import LedgerError
from auditor.ledger.asof import SubjectView, normalise
from auditor.ledger.model import Entry, FactRef, FactType, LogTime, Scope, SubjectFact, to_us

FORMAT = b"2"  # 2: each fact keeps its Kafka timestamp and its type (ledger, session 9)
DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as data is written
_BIAS = 1 << 63
_KEY = struct.Struct(">I16sQQQ")
_PART = struct.Struct(">I")
_EPOCH_DATE = date(1970, 1, 1)
_TYPES = {t.value: t for t in FactType}
_LOG_TIMES = {int(t): t for t in LogTime}
#: a fact's Kafka timestamp: microseconds since the epoch and whose clock (none: a file)
Logged = tuple[int, LogTime]
NOT_LOGGED: Logged = (-1, LogTime.NONE)
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_unjson = json.JSONDecoder().decode


def pseudonym_bytes(pseudonym: str) -> bytes:
    """The 16 bytes of a pseudonym (32 hex digits, as :class:`~auditor.trail.keys.Pseudonymizer` makes)."""
    try:
        raw = bytes.fromhex(pseudonym)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise LedgerError("the ledger is keyed by subject pseudonyms (32 hex digits), not raw ids")
    return raw


def subject_prefix(partition: int, pseudonym: str) -> bytes:
    return _PART.pack(partition) + pseudonym_bytes(pseudonym)


def encode_entry(pseudonym: bytes, e: Entry) -> tuple[bytes, bytes]:
    key = _KEY.pack(e.partition, pseudonym, e.effective_us + _BIAS, e.recorded_us + _BIAS, e.offset)
    s = e.scope
    body = [e.fact_id, e.type.value, e.source_system,
            None if s is None else s.purpose, None if s is None else s.recipient_type,
            None if s is None else s.recipient_id,
            None if e.birth_date is None else (e.birth_date - _EPOCH_DATE).days, e.service_id,
            e.logged_us, int(e.logged_by)]
    return key, _json(body).encode()


def decode_entry(key: bytes, value: bytes) -> Entry:
    partition, _, eff, rec, offset = _KEY.unpack(key)
    fact_id, ftype, source, purpose, rtype, rid, days, service, logged_us, logged_by = _unjson(bytes(value).decode())
    scope = None if purpose is None and rtype is None and rid is None else Scope(purpose, rtype, rid)
    born = None if days is None else _EPOCH_DATE + timedelta(days=days)
    return Entry(eff - _BIAS, rec - _BIAS, partition, offset, fact_id, _TYPES[ftype], source, scope, born, service,
                 logged_us, _LOG_TIMES[logged_by])


class IdHider:
    """Keyed digests of fact ids and service ids, which producers often build from the subject id
    ("u-10293/consent/7"); the store only compares them. BLAKE2b keyed with a secret derived from
    the pseudonym key (an HMAC of a fixed label, stored nowhere), so the digests can be neither
    reversed nor recomputed without the key, at a third of an HMAC's cost per fact."""

    __slots__ = ("_key",)
    LABEL = "\x00auditor.ledger.id-key"

    def __init__(self, pseudonymize: Callable[[str], str]) -> None:
        self._key = pseudonym_bytes(pseudonymize(self.LABEL))

    def __call__(self, value: str) -> str:
        return blake2b(value.encode(), key=self._key, digest_size=16).hexdigest()


def stored_entry(fact: SubjectFact, ref: FactRef, hide: Callable[[str], str], logged: Logged = NOT_LOGGED) -> Entry:
    """The entry the store keeps for ``fact``: its ids hidden by ``hide`` (an :class:`IdHider`), with
    its Kafka timestamp ``logged``."""
    return Entry(to_us(fact.effective_at), to_us(fact.recorded_at), ref.partition, ref.offset, hide(fact.fact_id),
                 fact.type, fact.source_system, fact.scope, fact.birth_date,
                 None if fact.service_id is None else hide(fact.service_id), logged[0], logged[1])


class LogBound(NamedTuple):
    """What bounds from below when a partition's next facts were logged (atl). Kafka appends a partition
    in order, so a fact was logged no earlier than any fact before it; and a fact at or past the stable
    end the auditor saw at some time was not readable before that time (a record in a transaction left
    open is stamped when written but read only once committed).

    ``broker_us``: the latest broker time (``LogAppendTime``) of the facts read so far (-1: none; then the
    partition is producer-stamped and its facts are taken on their ``recorded_at``, the README's
    ``CreateTime`` mode). ``seen``: (stable end, the auditor's clock when it last saw that end), ends
    increasing; a fact at offset o was logged no earlier than the time of the greatest end <= o."""

    broker_us: int = -1
    seen: tuple[tuple[int, int], ...] = ()

    def seen_floor(self, offset: int) -> int:
        """The auditor's time when it last saw the partition's stable end at or below ``offset`` (-1: never)."""
        for end, t in reversed(self.seen):
            if end <= offset:
                return t
        return -1

    def observed(self, end: int, now_us: int) -> LogBound:
        """After the auditor saw the partition's stable end at ``end`` at ``now_us``."""
        seen = list(self.seen)
        if seen and seen[-1][0] == end:
            seen[-1] = (end, max(seen[-1][1], now_us))
        elif not seen or end > seen[-1][0]:
            seen.append((end, now_us))
        return self._replace(seen=tuple(seen))

    def pruned(self, high: int) -> LogBound:
        """Without the ends no fact past ``high`` (confirmed) needs: all below ``high + 1`` but the last."""
        keep = [i for i, (end, _) in enumerate(self.seen) if end <= high + 1]
        return self._replace(seen=self.seen[keep[-1]:] if keep else self.seen)


NO_BOUND = LogBound()


class Applied(NamedTuple):
    """A fact newly applied to the ledger, under its subject's pseudonym."""

    pseudonym: str
    entry: Entry


class ApplyResult(NamedTuple):
    applied: tuple[Applied, ...]  # empty when the caller did not ask to collect them
    written: int                  # facts written
    skipped: int                  # at or below the partition's high offset: applied before
    high_offset: int


def resume_from(stored_high: int, low: int, high: int) -> int | None:
    """Where a restore of a partition starts, given the offset stored as applied (-1: none) and
    the topic's watermarks [low, high). None means "start over from ``low``": the stored range
    is gone from the topic (retention removed facts never applied, or the topic was recreated
    and is shorter than what was applied), so the partition's stored facts must be dropped."""
    if stored_high < 0:
        return low
    if stored_high >= high or stored_high + 1 < low:
        return None
    return stored_high + 1


class LedgerStore:
    """One instance's ledger. Not thread-safe: the daemon's main loop owns it."""

    def __init__(self, path: Path, key_id: str, *, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.env = lmdb.open(str(self.path), map_size=map_size, max_dbs=8, readahead=False,
                                 subdir=True, lock=True)
            self.facts = self.env.open_db(b"facts")
            self.meta = self.env.open_db(b"meta")
            self.decisions = self.env.open_db(b"decisions")
            self.decisions_by_time = self.env.open_db(b"decisions_by_time")
        except lmdb.Error as exc:
            raise LedgerError(f"cannot open the ledger store at {self.path}: {exc}", path=str(self.path)) from exc
        self.key_id = key_id
        self.reset_reason: str | None = None
        self._check_identity()

    # ------------------------------------------------------------------ lifecycle
    def _check_identity(self) -> None:
        with self.env.begin(db=self.meta) as txn:
            fmt, kid = txn.get(b"format"), txn.get(b"key_id")
        if fmt is None and kid is None:
            self._write_identity()
        elif fmt != FORMAT or kid != self.key_id.encode():
            self.reset_reason = ("store format changed" if fmt != FORMAT
                                 else "pseudonym key changed: facts are rebuilt under the new key")
            self.clear()

    def _write_identity(self) -> None:
        with self.env.begin(write=True, db=self.meta) as txn:
            txn.put(b"format", FORMAT)
            txn.put(b"key_id", self.key_id.encode())

    def clear(self) -> None:
        """Drop everything (the store is a cache of the facts topic)."""
        with self.env.begin(write=True) as txn:
            for db in (self.facts, self.meta, self.decisions, self.decisions_by_time):
                txn.drop(db, delete=False)
        self._write_identity()

    def close(self) -> None:
        self.env.close()

    def partitions(self, count: int) -> int:
        """The facts topic's partition count the store's facts were read with: recorded as ``count``
        when none is (a new or emptied store), else the recorded one."""
        with self.env.begin(write=True, db=self.meta) as txn:
            raw = txn.get(b"partitions")
            if raw is None:
                txn.put(b"partitions", str(count).encode())
                return count
        return int(raw)

    def topic_id(self, current: str) -> str:
        """The id of the facts topic the store's facts were read from (a topic deleted and created again
        under the same name has another id, and offsets that start again at 0): recorded as ``current``
        when none is (a new or emptied store), else the recorded one."""
        with self.env.begin(write=True, db=self.meta) as txn:
            raw = txn.get(b"topic_id")
            if raw is None:
                txn.put(b"topic_id", current.encode())
                return current
        return bytes(raw).decode()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ positions
    def high_offset(self, partition: int) -> int:
        """The highest offset applied in ``partition``; -1 when none."""
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(b"hw" + _PART.pack(partition))
        return -1 if raw is None else int(raw)

    def positions(self) -> dict[int, int]:
        out = {}
        with self.env.begin(db=self.meta) as txn:
            cur = txn.cursor()
            if cur.set_range(b"hw"):
                for key, value in cur:
                    if not key.startswith(b"hw"):
                        break
                    out[_PART.unpack(key[2:])[0]] = int(value)
        return out

    def drop_partition(self, partition: int) -> None:
        """Forget a partition's facts, decisions and position (to restore it from scratch)."""
        prefix = _PART.pack(partition)
        with self.env.begin(write=True) as txn:
            for db in (self.facts, self.decisions):
                _delete_prefix(txn, db, prefix)
            _delete_matching(txn, self.decisions_by_time, lambda k: k[8:12] == prefix)
            _delete_prefix(txn, self.meta, b"ixm" + prefix)  # the chain markers (auditor.ledger.late)
            txn.delete(b"hw" + prefix, db=self.meta)
            txn.delete(b"lb" + prefix, db=self.meta)

    # ------------------------------------------------------------------ writing
    def apply(self, partition: int, items: Iterable[tuple[int, SubjectFact]],
              pseudonymize: Callable[[str], str], *, collect: bool = True, advance: bool = True,
              logged: Mapping[int, Logged] | None = None) -> ApplyResult:
        """Apply facts read from ``partition`` (offset, fact), in one transaction with the new
        high offset. Facts at or below the stored high offset were applied before and are skipped,
        so applying the same range twice changes nothing. ``logged``: each offset's Kafka timestamp
        (none for a file).

        With ``advance=False`` the facts are written but the stored high offset stays where it is
        until :meth:`confirm`: the daemon confirms only once the corrections the facts caused are
        durable, so after a crash in between the same facts are read, applied (rewriting the same
        keys) and checked for late effects again."""
        staged: list[tuple[bytes, bytes]] = []
        applied: list[Applied] = []
        hide = IdHider(pseudonymize)
        high = start = self.high_offset(partition)
        skipped = 0
        for offset, fact in items:
            if offset <= start:
                skipped += 1
                continue
            pseudonym = pseudonymize(fact.subject_id)
            entry = stored_entry(fact, FactRef(partition, offset), hide,
                                 NOT_LOGGED if logged is None else logged.get(offset, NOT_LOGGED))
            staged.append(encode_entry(pseudonym_bytes(pseudonym), entry))
            if collect:
                applied.append(Applied(pseudonym, entry))
            high = max(high, offset)
        if high != start:
            staged.sort()
            self._write(lambda txn: self._put_all(txn, partition, staged, high if advance else None))
        return ApplyResult(tuple(applied), len(staged), skipped, high)

    def confirm(self, partition: int, offset: int, bound: LogBound | None = None) -> None:
        """Record ``offset`` as applied in ``partition`` (after facts applied with ``advance=False``), and
        what bounds the log time of the facts after it (:class:`LogBound`), in one transaction."""
        if offset <= self.high_offset(partition):
            return

        def put(txn: Any) -> None:
            txn.put(b"hw" + _PART.pack(partition), str(offset).encode(), db=self.meta)
            if bound is not None:
                txn.put(b"lb" + _PART.pack(partition), _json([bound.broker_us, bound.seen]).encode(), db=self.meta)
        self._write(put)

    def keep_seen(self, seen: Mapping[int, tuple[tuple[int, int], ...]]) -> None:
        """Keep the auditor's later reads of these partitions' ends with their bounds as confirmed, in one
        transaction: at a stop or when a partition leaves (no fact was confirmed since them), and while it
        runs, before the facts read after them are applied (a kill -9 before the confirm kept them in
        memory only, atl2)."""
        merged: dict[int, LogBound] = {}
        for partition, reads in seen.items():
            bound = self.log_bound(partition)
            for end, t in reads:
                bound = bound.observed(end, t)
            merged[partition] = bound

        def put(txn: Any) -> None:
            for partition, bound in merged.items():
                txn.put(b"lb" + _PART.pack(partition), _json([bound.broker_us, bound.seen]).encode(), db=self.meta)
        if merged:
            self._write(put)

    def broker_stamped(self, seen: bool = False) -> bool:
        """Whether the daemon has ever seen the facts topic configured ``LogAppendTime`` (``seen``: it
        just did; kept, never unset but with the store): a restart while the topic is set back to
        ``CreateTime`` does not forget it (atl2)."""
        if seen:
            with self.env.begin(write=True, db=self.meta) as txn:
                if txn.get(b"stamped") is None:
                    txn.put(b"stamped", b"1")
            return True
        with self.env.begin(db=self.meta) as txn:
            return txn.get(b"stamped") is not None

    def log_bound(self, partition: int) -> LogBound:
        """What bounds the log time of the facts after the partition's confirmed offset (as confirmed)."""
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(b"lb" + _PART.pack(partition))
        if raw is None:
            return self._migrated_bound(partition)
        broker_us, seen = _unjson(bytes(raw).decode())
        return LogBound(int(broker_us), tuple((int(e), int(t)) for e, t in seen))

    def _migrated_bound(self, partition: int) -> LogBound:
        """A partition confirmed before the store kept its LogBound (an upgrade): the latest broker time
        among its confirmed facts, found once by a scan of its facts and kept."""
        high = self.high_offset(partition)
        if high < 0:
            return NO_BOUND
        latest = -1
        with self.env.begin(db=self.facts) as txn:
            for key, value in _scan(txn.cursor(), _PART.pack(partition)):
                body = _unjson(bytes(value).decode())
                if body[9] == LogTime.APPEND and _KEY.unpack(key)[4] <= high:
                    latest = max(latest, int(body[8]))
        bound = LogBound(latest)
        self._write(lambda txn: txn.put(b"lb" + _PART.pack(partition), _json([latest, ()]).encode(), db=self.meta))
        return bound

    def _put_all(self, txn: Any, partition: int, staged: list[tuple[bytes, bytes]], high: int | None) -> None:
        cur = txn.cursor(db=self.facts)
        cur.putmulti(staged, dupdata=False, overwrite=True, append=False)
        if high is not None:
            txn.put(b"hw" + _PART.pack(partition), str(high).encode(), db=self.meta)

    def _write(self, body: Callable[[Any], None]) -> None:
        """Run ``body`` in a write transaction, growing the map when it is full."""
        for _ in range(8):
            try:
                with self.env.begin(write=True) as txn:
                    body(txn)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except lmdb.Error as exc:
                raise LedgerError(f"cannot write the ledger store at {self.path}: {exc}", path=str(self.path)) from exc
        raise LedgerError(f"the ledger store at {self.path} is full and could not grow", path=str(self.path))

    def restore(self, partition: int, items: Iterable[tuple[int, SubjectFact]],
                pseudonymize: Callable[[str], str], *, chunk: int = 20_000,
                progress: Callable[[int], None] | None = None) -> int:
        """Bulk-apply a partition's facts, ``chunk`` per transaction; returns facts written."""
        written = 0
        it = iter(items)
        while True:
            block = [x for _, x in zip(range(chunk), it, strict=False)]
            if not block:
                return written
            written += self.apply(partition, block, pseudonymize, collect=False).written
            if progress is not None:
                progress(len(block))

    # ------------------------------------------------------------------ reading
    def history(self, partition: int, pseudonym: str) -> tuple[Entry, ...]:
        """A subject's facts in ``partition``, in precedence order, each fact id once."""
        prefix = subject_prefix(partition, pseudonym)
        with self.env.begin(db=self.facts) as txn:
            return _in_order([decode_entry(k, v) for k, v in _scan(txn.cursor(), prefix)])

    def view(self, partition: int, pseudonym: str, at: datetime | int) -> SubjectView:
        """The subject's state as of ``at``: what the policy conditions read."""
        prefix = subject_prefix(partition, pseudonym)
        with self.env.begin() as txn:
            raw = txn.get(b"hw" + _PART.pack(partition), db=self.meta)
            entries = _in_order([decode_entry(k, v) for k, v in _scan(txn.cursor(db=self.facts), prefix)])
        return SubjectView(entries, at, partition=partition, through_offset=-1 if raw is None else int(raw))

    def stats(self) -> dict[str, int]:
        with self.env.begin() as txn:
            facts = txn.stat(self.facts)
            decisions = txn.stat(self.decisions)
        return {"facts": facts["entries"], "facts_bytes": _bytes(facts),
                "decisions": decisions["entries"], "decisions_bytes": _bytes(decisions)}


def _in_order(entries: list[Entry]) -> tuple[Entry, ...]:
    """A subject's entries as scanned (already in key order, which is precedence order within one
    partition); :func:`normalise` only when a fact id repeats."""
    if len({e.fact_id for e in entries}) == len(entries):
        return tuple(entries)
    return normalise(entries)


def _bytes(stat: Any) -> int:
    return (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]


def _scan(cur: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    if not cur.set_range(prefix):
        return
    for key, value in cur:
        if not key.startswith(prefix):
            return
        yield key, value


def _delete_prefix(txn: Any, db: Any, prefix: bytes) -> None:
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return
    while cur.key().startswith(prefix):
        if not cur.delete():
            break


def _delete_matching(txn: Any, db: Any, match: Callable[[bytes], bool]) -> None:
    cur = txn.cursor(db=db)
    if not cur.first():
        return
    while True:
        if match(cur.key()):
            if not cur.delete():
                break
        elif not cur.next():
            break
