"""A JSON-lines facts file as a ledger, for ``auditor check --ledger FACTS.jsonl``.

A file is one log: partition 0, the line number as the offset. Within one subject's history that
keeps the order the daemon sees when the same file is produced to the facts topic (one subject's
facts share a partition, in file order), so the same facts give the same answers offline and in
the daemon; only the provenance names lines instead of offsets.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from auditor.errors import ConfigError, DecodeError
from auditor.events.model import Event
from auditor.ledger.codec import iter_fact_lines
from auditor.ledger.join import Judged
from auditor.ledger.judging import StoreJudge
from auditor.ledger.model import Scope, SubjectFact
from auditor.ledger.store import LedgerStore
from auditor.policy.engine import CompiledPack, evaluate
from auditor.trail.keys import Pseudonymizer
from auditor.trail.record import Pseudonymize

FILE_PARTITION = 0


#: distinct fact scopes remembered for the undeclared-names warning (auditor.ledger.vocabulary)
MAX_SCOPES = 4096


class LoadReport(NamedTuple):
    applied: int
    errors: tuple[DecodeError, ...]  # each names the file, line and field
    #: each distinct scope of the file's facts: how many facts, and the first fact's line
    scopes: dict[Scope, tuple[int, int]] = {}


def load_facts_file(path: Path, store: LedgerStore, pseudonymize: Callable[[str], str], *,
                    chunk: int = 20_000) -> LoadReport:
    """Apply every valid line of ``path`` (offset = line number); collect the faulty lines."""
    errors: list[DecodeError] = []
    scopes: dict[Scope, tuple[int, int]] = {}

    def facts() -> Iterator[tuple[int, SubjectFact]]:
        for decoded in iter_fact_lines(path):
            if decoded.error is not None:
                errors.append(decoded.error)
            elif decoded.fact is not None:
                scope = decoded.fact.scope
                if scope is not None:
                    seen = scopes.get(scope)
                    if seen is not None:
                        scopes[scope] = (seen[0] + 1, seen[1])
                    elif len(scopes) < MAX_SCOPES:
                        scopes[scope] = (1, decoded.line)
                yield decoded.line, decoded.fact

    applied = store.restore(FILE_PARTITION, facts(), pseudonymize, chunk=chunk)
    return LoadReport(applied, tuple(errors), scopes)


class OfflineLedger:
    """The ledger behind ``auditor check --ledger FACTS.jsonl``: the file in a temporary store.

    Subjects are keyed by ``pseudonymize`` (the trail's key with ``--trail``, so records and the
    ledger agree; otherwise a key made for this run and forgotten with the store)."""

    def __init__(self, path: Path, pseudonymize: Pseudonymize | None = None) -> None:
        if not Path(path).is_file():
            raise ConfigError(f"no such facts file: {path} (--ledger takes subject facts as JSON lines)")
        self.pseudonymize: Pseudonymize = pseudonymize or Pseudonymizer(os.urandom(32))
        self._tmp = tempfile.TemporaryDirectory(prefix="auditor-ledger-")
        self.store = LedgerStore(Path(self._tmp.name), self.pseudonymize.key_id)
        try:
            self.report = load_facts_file(Path(path), self.store, self.pseudonymize)
        except BaseException:
            self.close()
            raise
        self.judging = StoreJudge(self.store, self.pseudonymize)

    @property
    def contradictions(self) -> int:
        return self.judging.contradictions

    def judge(self, e: Event, compiled: CompiledPack) -> Judged:
        """``e`` judged under ``compiled`` with the facts in force at its ``occurred_at`` (the
        daemon's code path: :class:`~auditor.ledger.judging.StoreJudge`)."""
        return self.judging.judge(e, compiled, FILE_PARTITION, lambda ev: evaluate(ev, compiled))

    def close(self) -> None:
        self.store.close()
        self._tmp.cleanup()
