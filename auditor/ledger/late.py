"""Late facts: which audited decisions a newly applied fact would have changed.

The auditor judges an event against the facts it has read when it audits it. A fact can arrive
after that with an earlier effective time: the consent platform's withdrawal lands a minute
after the marketing send it should have stopped. For that case every decision that read the
ledger is kept in a bounded on-disk index (per subject, by event time): the questions it asked
and the answers it got. When facts are applied, :meth:`DecisionIndex.affected` asks each
indexed decision of those subjects at or after the facts' effective time the same questions
again, against the history as it now stands, and returns every decision whose answers change,
old and new. The caller re-judges those events and writes a correction record for each; after
the correction is durable, :meth:`DecisionIndex.acknowledge` stores the new answers, so the next
late fact is compared with what the trail now says.

The index of one instance is rebuilt from the trail for every chain assigned to it (the daemon's
``LedgerFeed``): :meth:`DecisionIndex.forget_chains` drops the chain's entries, the decisions
read back are recorded, and :meth:`DecisionIndex.recheck` asks them all again, which finds the
facts applied before the decisions were indexed here (made by another instance, or lost in a
crash before their index write).

The index is bounded twice: by a window of event time (decisions older than the newest indexed
event minus ``window`` are dropped; an event dated more than ``FUTURE_SLACK_S`` after the clock is
indexed but does not count as the newest) and by bytes on disk (the oldest go first). A late fact
older than the horizon cannot be checked; :class:`LateReport` counts those for a metric.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date, timedelta
from typing import Any, NamedTuple

from auditor.ledger.asof import answer
from auditor.ledger.model import Entry, FactRef, Family, Query, Reading
from auditor.ledger.store import Applied, LedgerStore, _bytes, subject_prefix

_BIAS = 1 << 63
_Q = struct.Struct(">Q")
_PART = struct.Struct(">I")
_FAMILIES = {f.value: f for f in Family}
DEFAULT_WINDOW = timedelta(days=7)
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: an event dated more than this after the instance's clock does not advance the window (att12: one
#: event dated 9999-12-31 would otherwise drop every other decision and make every late fact "beyond")
FUTURE_SLACK_S = 3600


class DecisionReads(NamedTuple):
    """What one audited decision read from the ledger, and where its record sits in the trail."""

    partition: int
    pseudonym: str
    occurred_us: int
    chain_id: str
    seq: int
    event_id: str
    reads: tuple[tuple[Query, Reading], ...]
    #: opaque bytes the caller needs to re-judge the event (e.g. its record's facts); kept as given
    payload: bytes = b""
    #: how far the decision's partition of the facts had been applied (-1: not known); a rebuilt
    #: decision (:meth:`DecisionIndex.recheck`) names as the cause of its correction the facts past it
    through_offset: int = -1


class Change(NamedTuple):
    query: Query
    before: bool | int | date | None
    after: Reading


class Correction(NamedTuple):
    """A decision whose ledger answers changed: re-judge the event and record the outcome."""

    event_id: str
    chain_id: str
    seq: int
    occurred_us: int
    partition: int
    pseudonym: str
    changes: tuple[Change, ...]
    cause: tuple[FactRef, ...]  # the late facts that were applied
    payload: bytes = b""        # as recorded with the decision


class Marker(NamedTuple):
    """How far a chain's decisions are indexed here: the chain's seq of the last record indexed, when
    (wall clock, ms), and the facts partition's applied offset when the chain left this instance
    (None while it has not left since)."""

    seq: int
    ms: int
    left: int | None = None


class LateReport(NamedTuple):
    corrections: tuple[Correction, ...]
    late_facts: int        # applied facts effective before an indexed decision of their subject
    beyond_window: int     # applied facts effective before the horizon: corrections may be missing


def _enc(value: bool | int | date | None) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _dec(value: Any) -> bool | date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


def _key(partition: int, pseudonym: str, occurred_us: int, chain_id: str, seq: int) -> bytes:
    return subject_prefix(partition, pseudonym) + _Q.pack(occurred_us + _BIAS) + _chain_hash(chain_id) + _Q.pack(seq)


class DecisionIndex:
    """The bounded index of recent decisions that read the ledger (in the ledger's LMDB file)."""

    def __init__(self, store: LedgerStore, *, window: timedelta = DEFAULT_WINDOW,
                 max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.window_us = int(window.total_seconds() * 1_000_000)
        self.max_bytes = max_bytes

    # ------------------------------------------------------------------ horizon
    def horizon_us(self) -> int | None:
        """Decisions of events before this time may have been dropped (None: none dropped yet)."""
        with self.store.env.begin(db=self.store.meta) as txn:
            raw = txn.get(b"idx_horizon")
        return None if raw is None else int(raw)

    # ------------------------------------------------------------------ writing
    def record(self, decisions: Iterable[DecisionReads], marks: Mapping[tuple[int, str], int] | None = None) -> int:
        """Index decisions that read the ledger (one transaction); returns how many. The chains'
        markers (:meth:`marker`) advance to ``marks`` ((partition, chain id) -> seq) in the same
        transaction; by default to each chain's highest seq among ``decisions``."""
        decisions = list(decisions)
        if marks is None:
            auto: dict[tuple[int, str], int] = {}
            for d in decisions:
                k = (d.partition, d.chain_id)
                auto[k] = max(auto.get(k, -1), d.seq)
            marks = auto
        rows: list[tuple[bytes, bytes, bytes]] = []
        newest = -_BIAS
        ahead = int((self.clock() + FUTURE_SLACK_S) * 1_000_000)  # later events do not move the window
        for d in decisions:
            if not d.reads:
                continue
            key = _key(d.partition, d.pseudonym, d.occurred_us, d.chain_id, d.seq)
            doc: dict[str, Any] = {"e": d.event_id, "c": d.chain_id, "s": d.seq, "r": _reads(d.reads)}
            if d.through_offset >= 0:
                doc["t"] = d.through_offset
            value = _pack(doc, d.payload)
            rows.append((key, value, key[20:28] + key))
            if d.occurred_us <= ahead:
                newest = max(newest, d.occurred_us)
        if not rows:
            if marks:
                self.mark(marks)
            return 0
        store = self.store

        def body(txn: Any) -> None:
            for key, value, tkey in rows:
                txn.put(key, value, db=store.decisions)
                txn.put(tkey, b"", db=store.decisions_by_time)
            self._mark(txn, marks)
            raw = txn.get(b"idx_newest", db=store.meta)
            top = max(newest, min(int(raw), ahead)) if raw is not None else newest  # a store written before att12
            txn.put(b"idx_newest", str(top).encode(), db=store.meta)
            self._prune(txn, top - self.window_us)

        store._write(body)
        return len(rows)

    def _prune(self, txn: Any, cutoff: int) -> None:
        """Drop decisions before ``cutoff``, then the oldest while over the byte bound."""
        store = self.store
        cur = txn.cursor(db=store.decisions_by_time)
        dropped: int | None = None

        def drop_first() -> int:
            occurred = int(_Q.unpack(cur.key()[:8])[0]) - _BIAS
            txn.delete(cur.key()[8:], db=store.decisions)
            cur.delete()
            return occurred

        while cur.first() and int(_Q.unpack(cur.key()[:8])[0]) - _BIAS < cutoff:
            dropped = drop_first()
        while self._bytes(txn) > self.max_bytes and cur.first():
            step = max(16, int(txn.stat(store.decisions)["entries"]) // 16)  # the oldest 1/16th, then re-measure
            for _ in range(step):
                if not cur.first():
                    break
                dropped = drop_first()
        if dropped is not None:
            old = self._get_horizon(txn)
            if old is None or dropped + 1 > old:
                txn.put(b"idx_horizon", str(dropped + 1).encode(), db=store.meta)

    def _bytes(self, txn: Any) -> int:
        return _bytes(txn.stat(self.store.decisions)) + _bytes(txn.stat(self.store.decisions_by_time))

    def _get_horizon(self, txn: Any) -> int | None:
        raw = txn.get(b"idx_horizon", db=self.store.meta)
        return None if raw is None else int(raw)

    def acknowledge(self, corrections: Iterable[Correction],
                    payloads: Mapping[tuple[str, int], bytes] | None = None) -> None:
        """Store the new answers of corrected decisions (after their correction records are durable),
        and with them the payload given for (chain id, seq), if any: the correction record, so the
        next correction is compared with what the trail says last."""
        store = self.store
        updates: list[tuple[bytes, bytes]] = []
        with store.env.begin(db=store.decisions) as txn:
            for c in corrections:
                key = _key(c.partition, c.pseudonym, c.occurred_us, c.chain_id, c.seq)
                raw = txn.get(key)
                if raw is None:
                    continue  # pruned meanwhile
                doc, payload = _unpack(raw)
                new = {(q.family.value, q.purpose, q.recipient_type, q.recipient_id): _enc(ch.after.value)
                       for ch in c.changes for q in (ch.query,)}
                doc["r"] = [[*row[:4], new.get(tuple(row[:4]), row[4])] for row in doc["r"]]
                updates.append((key, _pack(doc, (payloads or {}).get((c.chain_id, c.seq), payload))))
        if updates:
            def body(txn: Any) -> None:
                for k, v in updates:
                    txn.put(k, v, db=store.decisions)

            store._write(body)

    # ------------------------------------------------------------------ reading
    def affected(self, applied: Iterable[Applied]) -> LateReport:
        """The indexed decisions whose ledger answers the newly applied facts change."""
        by_subject: dict[tuple[int, str], list[Applied]] = {}
        for a in applied:
            by_subject.setdefault((a.entry.partition, a.pseudonym), []).append(a)
        horizon = self.horizon_us()
        corrections: list[Correction] = []
        late = beyond = 0
        store = self.store
        for (partition, pseudonym), facts in by_subject.items():
            earliest = min(a.entry.effective_us for a in facts)
            if horizon is not None:
                beyond += sum(1 for a in facts if a.entry.effective_us < horizon)
            start = subject_prefix(partition, pseudonym) + _Q.pack(max(earliest, -_BIAS) + _BIAS)
            prefix = start[:20]
            with store.env.begin(db=store.decisions) as txn:
                rows = list(_scan_from(txn.cursor(), start, prefix))
            if not rows:
                continue
            late += sum(1 for a in facts if a.entry.effective_us <= max(_occurred(k) for k, _ in rows))
            history = store.history(partition, pseudonym)
            cause = tuple(sorted(a.entry.ref for a in facts))
            new = set(cause)
            seen = tuple(e for e in history if e.ref not in new)  # what the decisions could have read
            for key, raw in rows:
                occurred = _occurred(key)
                doc, payload = _unpack(raw)
                changes = _changes(doc, history, occurred, seen)
                if changes:
                    relevant = tuple(r for r in cause if any(
                        a.entry.ref == r and a.entry.effective_us <= occurred for a in facts))
                    corrections.append(Correction(doc["e"], doc["c"], doc["s"], occurred, partition, pseudonym,
                                                  tuple(changes), relevant or cause, payload))
        return LateReport(tuple(corrections), late, beyond)

    # ------------------------------------------------------------------ markers
    def marker(self, partition: int, chain: str) -> Marker | None:
        with self.store.env.begin(db=self.store.meta) as txn:
            raw = txn.get(_marker_key(partition, chain))
        if raw is None:
            return None
        doc = json.loads(bytes(raw))
        return Marker(int(doc["seq"]), int(doc["ms"]), doc.get("left"))

    def mark(self, marks: Mapping[tuple[int, str], int]) -> None:
        """Advance the markers of these (partition, chain id) to at least these seqs, now."""
        if marks:
            self.store._write(lambda txn: self._mark(txn, marks))

    def _mark(self, txn: Any, marks: Mapping[tuple[int, str], int]) -> None:
        now = int(self.clock() * 1000)
        for (partition, chain), seq in marks.items():
            key = _marker_key(partition, chain)
            raw = txn.get(key, db=self.store.meta)
            old = -1 if raw is None else int(json.loads(bytes(raw))["seq"])
            txn.put(key, json.dumps({"seq": max(seq, old), "ms": now}).encode(), db=self.store.meta)

    def left(self, partition: int, chain: str, facts_high: int) -> None:
        """The chain left this instance when its facts partition was applied through ``facts_high``."""
        marker = self.marker(partition, chain)
        if marker is not None:
            doc = {"seq": marker.seq, "ms": marker.ms, "left": facts_high}
            self.store._write(lambda txn: txn.put(_marker_key(partition, chain), json.dumps(doc).encode(),
                                                  db=self.store.meta))

    def forget_chains(self, chains: Iterable[tuple[int, str]]) -> int:
        """Drop the indexed decisions of these (partition, chain id): before the chain's decisions
        are indexed again from the trail (a partition assigned to this instance). Returns how many."""
        by_partition: dict[int, set[bytes]] = {}
        for partition, chain in chains:
            by_partition.setdefault(partition, set()).add(_chain_hash(chain))
        store = self.store
        dropped = 0

        def body(txn: Any) -> None:
            nonlocal dropped
            cur = txn.cursor(db=store.decisions)
            for partition, hashes in by_partition.items():
                prefix = _PART.pack(partition)
                doomed = [bytes(k) for k, _ in _scan_from(cur, prefix, prefix) if bytes(k[28:36]) in hashes]
                for key in doomed:
                    txn.delete(key, db=store.decisions)
                    txn.delete(key[20:28] + key, db=store.decisions_by_time)
                dropped += len(doomed)
                for h in hashes:
                    txn.delete(MARKER_PREFIX + prefix + h, db=store.meta)

        store._write(body)
        return dropped

    def recheck(self, chains: Iterable[tuple[int, str]], progress: Callable[[], None] | None = None,
                only: set[tuple[str, int]] | None = None) -> LateReport:
        """Ask every indexed decision of these (partition, chain id) its questions again, against the
        history as it stands: the decisions whose answers changed since they were made (facts that
        arrived after them, read by whichever instance). For decisions just indexed from the trail
        by another instance's records, :meth:`affected` cannot see those facts: they were applied
        before the decisions were indexed here. The cause of each correction is the facts past the
        decision's ``through_offset`` effective by its time (else the facts its new answers cite)."""
        by_partition: dict[int, set[bytes]] = {}
        for partition, chain in chains:
            by_partition.setdefault(partition, set()).add(_chain_hash(chain))
        store = self.store
        corrections: list[Correction] = []
        late: set[FactRef] = set()
        for partition, hashes in by_partition.items():
            prefix = _PART.pack(partition)
            with store.env.begin(db=store.decisions) as txn:
                rows = [(k, v) for k, v in _scan_from(txn.cursor(), prefix, prefix) if k[28:36] in hashes]
            history: tuple[Entry, ...] = ()
            subject = b""
            for n, (key, raw) in enumerate(rows):
                if progress is not None and n % 5_000 == 4_999:
                    progress()  # a long recheck is progress (the daemon's watchdog)
                if key[:20] != subject:
                    subject = key[:20]
                    pseudonym = key[4:20].hex()
                    history = store.history(partition, pseudonym)
                occurred = _occurred(key)
                doc, payload = _unpack(raw)
                if only is not None and (doc["c"], doc["s"]) not in only:
                    continue
                through = int(doc.get("t", -1))
                seen = tuple(e for e in history if e.offset <= through) if through >= 0 else None
                changes = _changes(doc, history, occurred, seen)
                if not changes:
                    continue
                cause = tuple(sorted(e.ref for e in history if e.offset > through and e.effective_us <= occurred)) \
                    if through >= 0 else ()
                cause = cause or tuple(sorted({r for ch in changes for r in ch.after.refs}))
                late.update(cause)
                corrections.append(Correction(doc["e"], doc["c"], doc["s"], occurred, partition, key[4:20].hex(),
                                              tuple(changes), cause, payload))
        return LateReport(tuple(corrections), len(late), 0)

    def count(self) -> int:
        with self.store.env.begin() as txn:
            return int(txn.stat(self.store.decisions)["entries"])


def _changes(doc: dict[str, Any], history: tuple[Entry, ...], occurred: int,
             seen: tuple[Entry, ...] | None = None) -> list[Change]:
    """The questions of an indexed decision whose answer ``history`` now gives differently; none
    unless a fact the decision had not read changes one of them (attlg).

    ``seen`` is the history without the facts the decision had not read (the late ones). A question
    whose answer those facts do not change (``seen`` and ``history`` agree) but which is now answered
    otherwise than the decision recorded was read differently, not corrected by a late fact: an
    upgrade that changed how a fact is read, or facts retention removed. That alone is no
    correction: the record stands as the auditor decided it, and a correction would name as late
    facts that were not. When a late fact does change an answer, every changed question is listed (the
    correction is judged with the facts as they now stand)."""
    changes = []
    caused = seen is None
    for family, purpose, rtype, rid, before in doc["r"]:
        q = Query(_FAMILIES[family], purpose, rtype, rid)
        now = answer(history, occurred, q)
        if _enc(now.value) != before:
            changes.append(Change(q, _dec(before), now))
            caused = caused or answer(seen or (), occurred, q).value != now.value
    return changes if caused else []


def _chain_hash(chain_id: str) -> bytes:
    return hashlib.sha256(chain_id.encode()).digest()[:8]


#: the ledger store's meta keys of chain markers: prefix | partition u32 | chain hash
MARKER_PREFIX = b"ixm"


def _marker_key(partition: int, chain: str) -> bytes:
    return MARKER_PREFIX + _PART.pack(partition) + _chain_hash(chain)


def _reads(reads: tuple[tuple[Query, Reading], ...]) -> list[list[Any]]:
    seen: dict[tuple[str, str | None, str | None, str | None], Any] = {}
    for q, r in reads:
        seen.setdefault((q.family.value, q.purpose, q.recipient_type, q.recipient_id), _enc(r.value))
    return [[*k, v] for k, v in seen.items()]


_LEN = struct.Struct(">I")


def _pack(doc: dict[str, Any], payload: bytes) -> bytes:
    """An index value: the decision's reads as JSON, then the caller's payload as given."""
    text = json.dumps(doc, separators=(",", ":")).encode()
    return _LEN.pack(len(text)) + text + payload


def _unpack(raw: bytes) -> tuple[dict[str, Any], bytes]:
    raw = bytes(raw)
    n = _LEN.unpack_from(raw)[0]
    return json.loads(raw[4:4 + n]), raw[4 + n:]


def _occurred(key: bytes) -> int:
    return int(_Q.unpack(key[20:28])[0]) - _BIAS


def _scan_from(cur: Any, start: bytes, prefix: bytes) -> Iterable[tuple[bytes, bytes]]:
    if not cur.set_range(start):
        return
    for key, value in cur:
        if not key.startswith(prefix):
            return
        yield bytes(key), bytes(value)


