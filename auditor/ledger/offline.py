"""Load a JSON-lines facts file into a ledger store, for ``auditor check --ledger FACTS.jsonl``.

A file is one log: partition 0, the line number as the offset. Within one subject's history that
keeps the order the daemon sees when the same file is produced to the facts topic (one subject's
facts share a partition, in file order), so the same facts give the same answers offline and in
the daemon; only the provenance names lines instead of offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from auditor.errors import DecodeError
from auditor.ledger.codec import iter_fact_lines
from auditor.ledger.model import SubjectFact
from auditor.ledger.store import LedgerStore

FILE_PARTITION = 0


class LoadReport(NamedTuple):
    applied: int
    errors: tuple[DecodeError, ...]  # each names the file, line and field


def load_facts_file(path: Path, store: LedgerStore, pseudonymize: Callable[[str], str], *,
                    chunk: int = 20_000) -> LoadReport:
    """Apply every valid line of ``path`` (offset = line number); collect the faulty lines."""
    errors: list[DecodeError] = []

    def facts() -> Iterator[tuple[int, SubjectFact]]:
        for decoded in iter_fact_lines(path):
            if decoded.error is not None:
                errors.append(decoded.error)
            elif decoded.fact is not None:
                yield decoded.line, decoded.fact

    applied = store.restore(FILE_PARTITION, facts(), pseudonymize, chunk=chunk)
    return LoadReport(applied, tuple(errors))
