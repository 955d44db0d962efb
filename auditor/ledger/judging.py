"""One code path for judging an event against an on-disk ledger: ``auditor check --ledger`` and
the daemon both call :meth:`StoreJudge.judge`.

The subject's facts as of the event's ``occurred_at`` come from the store
(:meth:`~auditor.ledger.store.LedgerStore.view`, under the subject's keyed pseudonym, in the
partition that holds them), and the pure join (:class:`~auditor.ledger.join.PackJoin`) judges the
event with them. Offline the partition is the file's (0); in the daemon it is the event's own
partition, because the facts topic is co-partitioned with the event topics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from auditor.events.model import Event
from auditor.ledger.join import Judged, PackJoin
from auditor.ledger.model import RESTRICTIVE, Family, Query, Reading
from auditor.ledger.store import LedgerStore
from auditor.policy.decision import Decision
from auditor.policy.engine import CompiledPack

#: how long after its ``occurred_at`` an event may reach its topic (the producer's lag, clock skew) before
#: the auditor notes that a verdict rests on the event's own clock (:func:`escaped`)
EVENT_LAG_US = 300 * 1_000_000


def escaped(store: LedgerStore, partition: int, pseudonym: str, reads: Iterable[tuple[Query, Reading]],
            occurred_us: int, logged_us: int) -> tuple[Family, ...]:
    """The questions a decision read whose answer, as of the event's Kafka time less :data:`EVENT_LAG_US`,
    is restrictive where the answer as of its ``occurred_at`` was not (a birth date: any other answer).

    ``occurred_at`` is the audited system's word. An event logged long after it says it happened, before
    a withdrawal on record by then, may be a delayed event or one dated back to escape the withdrawal:
    the auditor cannot tell, and judges it at ``occurred_at`` (a delayed event is not a violation) but
    says so (the daemon counts and logs it). Empty when the event reached its topic in time."""
    later = logged_us - EVENT_LAG_US
    if later <= occurred_us:
        return ()
    view = store.view(partition, pseudonym, later)
    found: dict[Family, None] = {}
    for q, reading in reads:
        again = view.ask(q)
        if again.value == reading.value:
            continue
        restrictive = RESTRICTIVE.get(q.family)
        if restrictive is None or again.value is restrictive:
            found[q.family] = None
    return tuple(found)


class StoreJudge:
    """Judges events with the facts of a :class:`LedgerStore` (one :class:`PackJoin` per pack)."""

    def __init__(self, store: LedgerStore, pseudonymize: Callable[[str], str]) -> None:
        self.store = store
        self.pseudonymize = pseudonymize
        self._joins: dict[str, PackJoin] = {}
        self.contradictions = 0

    def join_for(self, compiled: CompiledPack) -> PackJoin:
        join = self._joins.get(compiled.id)
        if join is None or join.compiled is not compiled:
            join = self._joins[compiled.id] = PackJoin(compiled)
        return join

    def judge(self, e: Event, compiled: CompiledPack, partition: int, evaluate: Callable[[Event], Decision], *,
              pseudonym: str | None = None) -> Judged:
        """``e`` judged under ``compiled`` with the facts in force at its ``occurred_at``.

        ``pseudonym`` is given when ``e`` already carries pseudonyms (an event rebuilt from its
        audit record, to be judged again after a late fact)."""
        subject = pseudonym if pseudonym is not None else self.pseudonymize(e.subject.id)
        view = self.store.view(partition, subject, e.occurred_at)
        judged = self.join_for(compiled).judge(e, view, evaluate)
        self.contradictions += len(judged.contradictions)
        return judged
