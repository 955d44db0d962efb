"""The state of one subject as of an instant: pure functions over the subject's fact history.

Precedence (one rule for every family):

* a fact is **in force at t** when its effective time is at or before t; a **permissive** fact (a
  grant, an opt-in, a reopening, a cancelled deletion, a service started: the value that is not
  :data:`~auditor.ledger.model.RESTRICTIVE`) only once it was also recorded, by t (attlg). Consent is
  given before the processing it allows (thisproduct 2.C, 3.A "prior consent"; ipasar 2.7 "Obtain
  your consent ... to be able to use"): a grant recorded after an event, whatever effective time its
  producer gives it, cannot make the event consented to, nor correct its violation into an ALLOW. A
  withdrawal binds from when the person made it, however late it was recorded (ipmart and inper: one
  may unsubscribe "at all times", "at any time"). A **birth date** waits for its record too, in both
  directions: the seeds' duties toward children are toward known minors (inper "We do not knowingly
  collect personal data from children"; ipasar 5 and waimaotong F cannot tell ages), so what was on
  record at t says whether the subject was a known minor at t, and a later record changes nothing before it.
  ``recorded_at`` is the producer's word: when the broker stamped the fact (``LogAppendTime``), a
  permissive fact is in force no earlier than its log time less :data:`LOG_LAG_US` (:func:`known_us`);
* among the facts in force that answer a question, the **latest** wins: the greatest by
  (effective time, recorded time, log position). A fact that says "withdrawn" after one that
  says "granted" ends the consent from its effective time on; a later grant restores it;
* **at the same effective time the restrictive fact wins** (:data:`~auditor.ledger.model.RESTRICTIVE`):
  a grant and a withdrawal both effective at 10:00 leave the consent withdrawn, whichever was
  recorded or logged last (two systems' facts reach the topic in arrival order, which says
  nothing about the person's intent); likewise opt-out over opt-in, closed over reopened,
  deletion requested over cancelled, service ended over started. Recorded time and log position
  order only facts that say the same thing (and birth dates);
* for scoped families (consent, opt-out, guardian consent, services), a fact answers a
  question when its scope covers it (:meth:`Scope.covers`). Specificity does not outrank time:
  a withdrawal of all marketing consent on Monday ends the consent a subject gave to one
  partner last year, and a grant to that partner on Tuesday restores it for that partner only.
  This is what a person means by each instruction, and it never lets an old, narrow grant
  survive a later, broad withdrawal;
* **marketing: the person's latest word** (attperm). A consent fact scoped to purpose
  ``marketing`` answers the opt-out question too: granted says "not opted out", withdrawn says
  "opted out", ranked with the opt-out family's own facts by the rules above (latest wins, the
  restrictive one at a tie, scope first). A subject who opted out in January and consented to a
  partner's offers in March gave, in March, the prior consent thisproduct 2.C asks for: her old
  opt-out no longer speaks for her; one who withdrew her marketing consent has said no to
  marketing, whether or not the pack asks for consent at all (ipmart's and inper's marketing is
  opt-out). An unscoped consent, or one scoped to another purpose, is not by itself a word on
  the opt-out question (it never lifts an opt-out);
  a ``MARKETING_OPT_OUT`` does not answer the consent question (a pack that needs consent reads
  both). But a marketing grant says "not opted out" only until a withdrawal that covers the
  question takes effect at or after it (attled): a later withdrawal of all consent, or of all
  consent to a partner, ends the grant on the consent question and answers "opted out" (an old,
  narrow grant never survives a later, broad withdrawal, on either question); such a withdrawal
  alone, with no marketing grant before it, still says nothing of marketing. When the latest word
  is a marketing consent fact, the opt-out answer is what the consent question says (attlg): a
  later grant that covers marketing (all consent, all consent to partners) restores a grant that a
  broad withdrawal ended, and lifts a withdrawn marketing consent, on both questions alike; it
  still never lifts a ``MARKETING_OPT_OUT`` (an opt-out is answered by opt-out facts and marketing
  consents only);
* services: each ``service_id`` is running or ended by its own latest fact; a question about a
  service is answered True when any running service covers it, False when services covered it
  but all have ended, and None when none ever did;
* a fact repeated under its ``fact_id`` is applied once, the first in the log; a repeated id that
  says something else is applied as a fact of its own (attlg);
* no fact: the answer's value is None ("the ledger does not know"); what that means is for the
  policy to say.

Age is counted in whole years between the birth date and t's UTC date (a 29 February birthday
comes on 1 March in other years); before the birth date the age is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from auditor.ledger.model import (
    RESTRICTIVE,
    UNKNOWN,
    Entry,
    Family,
    LogTime,
    Provenance,
    Query,
    Reading,
    same_name,
    to_us,
)

#: the purpose whose consent facts also answer the opt-out question
MARKETING = "marketing"

#: how long after its recorded time a fact may reach the facts log (the producing system's lag and
#: the two clocks' skew): a permissive fact the broker stamped later than this is in force only from
#: its log time less this
LOG_LAG_US = 300 * 1_000_000
#: whose times bound when a fact was logged: the broker's, or the daemon's bound from the log's order
_LOGGED = (LogTime.APPEND, LogTime.BOUND)


def known_us(e: Entry) -> int:
    """From when a permissive fact is in force (its effective time aside): its ``recorded_at``, the
    producer's word; and when the broker stamped it (``LogAppendTime``), no earlier than its log time
    less :data:`LOG_LAG_US`: a consent that reached the log a year after its stated record time was
    not on record before it reached the log, whatever the producer says (ledger, session 9). A
    ``CreateTime`` is the producing client's clock, a claim like ``recorded_at``: kept and compared
    (the daemon counts a fact whose two times disagree), not trusted, unless broker-stamped facts
    precede it in its partition: then its time is a lower bound of when it was logged (``BOUND``, the
    daemon's: the log's order and its own reads, atl) and counts like the broker's."""
    if e.logged_by in _LOGGED and e.logged_us - LOG_LAG_US > e.recorded_us:
        return e.logged_us - LOG_LAG_US
    return e.recorded_us


def normalise(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    """Entries in precedence order, each fact once: a repeat of a ``fact_id`` that says the same thing
    (type, effective time, scope, birth date, service: a producer's retry, even restamped) at its first
    position in the log. A repeated id that says something else is a fact of its own (attlg): two
    systems of record may number their facts alike, and a fact published first under the id a consent
    platform will give its next withdrawal must not make that withdrawal vanish."""
    first: dict[tuple[object, ...], Entry] = {}
    for e in entries:
        key = (e.fact_id, e.type, e.effective_us, e.scope, e.birth_date, e.service_id)
        seen = first.get(key)
        if seen is None or (e.partition, e.offset) < (seen.partition, seen.offset):
            first[key] = e
    return tuple(sorted(first.values()))


def answer(history: tuple[Entry, ...], at_us: int, q: Query) -> Reading:
    """The answer to ``q`` at ``at_us`` from a normalised history (see :func:`normalise`)."""
    family = q.family
    if family is Family.SERVICE_ACTIVE:
        return _service(history, at_us, q)
    scoped = q.family in _SCOPED_QUESTIONS
    restrictive = RESTRICTIVE.get(family)
    best: Entry | None = None
    said: bool | date | None = None  # best's answer to q
    for e in reversed(history):
        if best is not None and e.effective_us != best.effective_us:
            break  # nothing earlier can outrank the latest in force
        if e.effective_us > at_us:
            continue
        value = e.value
        if e.family is not family:
            if family is not Family.OPT_OUT or not _marketing_consent(e):
                continue
            value = not value  # a marketing consent granted: not opted out; withdrawn: opted out
        if scoped and e.scope is not None and not e.scope.covers(q.purpose, q.recipient_type, q.recipient_id):
            continue
        if value is not restrictive and known_us(e) > at_us:
            continue  # a permissive fact or a birth date: in force only once recorded and logged (attlg, ledger)
        if best is None:
            best, said = e, value
            if restrictive is None or value is restrictive:
                break
        elif value is restrictive:  # same effective time: the restrictive fact wins
            best, said = e, value
            break
    if best is None:
        return UNKNOWN
    if family is Family.OPT_OUT and best.family is Family.CONSENT:
        return _as_consent_says(history, at_us, best, q)
    return Reading(said, (best.ref,), best.effective_us)


def _as_consent_says(history: tuple[Entry, ...], at_us: int, best: Entry, q: Query) -> Reading:
    """The opt-out answer when the latest word on it is a marketing consent fact (``best``): what the
    consent question now says, negated (attled, attlg). ``best`` covers that question, so the consent
    answer is decided by ``best`` or by a consent fact at or after it: a later withdrawal of all consent
    (or of all consent to a partner) ends a marketing grant on both questions, and a later grant that
    covers marketing (all consent, or all consent to partners) restores it on both. Withdrawn: the
    withdrawal is cited; granted: the marketing consent fact and, if another, the grant now in force."""
    consent = answer(history, at_us, Query(Family.CONSENT, q.purpose, q.recipient_type, q.recipient_id))
    if consent.value is False:
        return Reading(True, consent.refs, consent.since_us)
    return Reading(False, tuple(sorted({best.ref, *consent.refs})), consent.since_us)


def _marketing_consent(e: Entry) -> bool:
    """A consent fact scoped to purpose ``marketing``: it answers the opt-out question too."""
    return e.family is Family.CONSENT and e.scope is not None and e.scope.purpose is not None \
        and same_name(e.scope.purpose, MARKETING)


_SCOPED_QUESTIONS = frozenset({Family.CONSENT, Family.OPT_OUT, Family.GUARDIAN_CONSENT})


def _service(history: tuple[Entry, ...], at_us: int, q: Query) -> Reading:
    latest: dict[str, Entry] = {}   # service id -> its latest fact in force
    scope_of: dict[str, Entry] = {}  # service id -> its latest start in force (what it covers)
    for e in reversed(history):
        if e.effective_us > at_us or e.family is not Family.SERVICE_ACTIVE:
            continue
        if e.value is True and known_us(e) > at_us:
            continue  # a start is in force only once recorded and logged (attlg); an end from its effective time
        sid = e.service_id or ""
        last = latest.get(sid)
        if last is None or (last.value is True and e.value is False and e.effective_us == last.effective_us):
            latest[sid] = e  # an end at the same effective time as a start wins (RESTRICTIVE)
        if e.value is True:
            scope_of.setdefault(sid, e)
    running: list[Entry] = []
    ended: list[Entry] = []
    for sid, last in latest.items():
        start = scope_of.get(sid)
        if start is None or (start.scope is not None
                             and not start.scope.covers(q.purpose, q.recipient_type, q.recipient_id)):
            continue
        (running if last.value is True else ended).append(last)
    if running:
        decided = min(running)  # the earliest running start that covers it: deterministic
        return Reading(True, (decided.ref,), decided.effective_us)
    if ended:
        last_end = max(ended)
        return Reading(False, tuple(sorted(e.ref for e in ended)), last_end.effective_us)
    return UNKNOWN


def age_on(born: date, at_us: int) -> int | None:
    """Whole years from ``born`` to the UTC date of ``at_us``; None before the birth date."""
    day = (_EPOCH + timedelta(microseconds=at_us)).date()
    years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return years if years >= 0 else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SubjectView:
    """One subject's ledger state as of one instant: the type the policy conditions read.

    Every answer is remembered in :attr:`reads` (question and answer, in the order asked), so
    the audit record can say which facts a decision read (:meth:`provenance`) and the late-fact
    index can ask the same questions again when a fact arrives late.
    """

    __slots__ = ("history", "at_us", "partition", "through_offset", "reads", "_memo")

    def __init__(self, history: tuple[Entry, ...], at: datetime | int, *, partition: int = 0,
                 through_offset: int = -1) -> None:
        self.history = history
        self.at_us = at if isinstance(at, int) else to_us(at)
        self.partition = partition
        self.through_offset = through_offset
        self.reads: list[tuple[Query, Reading]] = []
        #: answers already given: the join's overlay and its claims check ask the same questions
        self._memo: dict[Query, Reading] = {}

    def ask(self, q: Query) -> Reading:
        reading = self._memo.get(q)
        if reading is None:
            reading = self._memo[q] = answer(self.history, self.at_us, q) if self.history else UNKNOWN
        self.reads.append((q, reading))
        return reading

    # -- the questions the policy conditions ask, by name
    def consent(self, purpose: str | None, recipient_type: str | None = None,
                recipient_id: str | None = None) -> Reading:
        return self.ask(Query(Family.CONSENT, purpose, recipient_type, recipient_id))

    def opted_out(self, purpose: str | None, recipient_type: str | None = None,
                  recipient_id: str | None = None) -> Reading:
        return self.ask(Query(Family.OPT_OUT, purpose, recipient_type, recipient_id))

    def guardian_consent(self, purpose: str | None, recipient_type: str | None = None,
                         recipient_id: str | None = None) -> Reading:
        return self.ask(Query(Family.GUARDIAN_CONSENT, purpose, recipient_type, recipient_id))

    def service_active(self, purpose: str | None, recipient_type: str | None = None,
                       recipient_id: str | None = None) -> Reading:
        return self.ask(Query(Family.SERVICE_ACTIVE, purpose, recipient_type, recipient_id))

    def birth_date(self) -> Reading:
        return self.ask(Query(Family.BIRTH_DATE))

    def age(self) -> Reading:
        """The age in whole years at the view's instant (value None: unknown)."""
        born = self.birth_date()
        if not isinstance(born.value, date):
            return born
        return Reading(age_on(born.value, self.at_us), born.refs, born.since_us)

    def minor(self, minor_age: int) -> Reading:
        years = self.age()
        if not isinstance(years.value, int):
            return years
        return Reading(years.value < minor_age, years.refs, years.since_us)

    def account_closed(self) -> Reading:
        return self.ask(Query(Family.ACCOUNT_CLOSED))

    def deletion_requested(self) -> Reading:
        return self.ask(Query(Family.DELETION_REQUESTED))

    def provenance(self) -> Provenance:
        offsets = sorted({r.offset for _, reading in self.reads for r in reading.refs})
        return Provenance(self.partition, self.through_offset, tuple(offsets))

    def __repr__(self) -> str:  # never the history: it is about a person
        return f"SubjectView(at_us={self.at_us}, facts={len(self.history)}, partition={self.partition})"
