"""Factories for ledger tests: facts, entries and times, with defaults that say nothing."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

from auditor.ledger.model import Entry, FactType, Scope, SubjectFact, to_us

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


def at(minutes: float) -> datetime:
    """T0 plus ``minutes``."""
    return T0 + timedelta(minutes=minutes)


def us(minutes: float) -> int:
    return to_us(at(minutes))


def fact(ftype: FactType | str, minutes: float = 0, *, subject: str = "u-1", recorded: float | None = None,
         fact_id: str | None = None, scope: Scope | None = None, born: date | None = None,
         service: str | None = None, source: str = "consent-platform") -> SubjectFact:
    ftype = FactType(ftype)
    return SubjectFact(fact_id or f"f-{next(_ids)}", subject, ftype, at(minutes),
                       at(recorded if recorded is not None else minutes), source, scope, born, service)


def entry(ftype: FactType | str, minutes: float = 0, *, offset: int | None = None, recorded: float | None = None,
          partition: int = 0, fact_id: str | None = None, scope: Scope | None = None, born: date | None = None,
          service: str | None = None) -> Entry:
    n = next(_ids)
    return Entry(us(minutes), us(recorded if recorded is not None else minutes), partition,
                 offset if offset is not None else n, fact_id or f"f-{n}", FactType(ftype), "cmp", scope, born,
                 service)
