"""Facts scoped to names no loaded pack declares: they are valid, and silently answer nothing.

A consent platform that withdraws consent for ``"markting"`` or for recipient type
``"partners"`` sends a well-formed fact; no event judged under the loaded packs names that
purpose or recipient type (events name the packs' declared vocabulary), so the fact never
covers a question and the withdrawal has no effect. That is worth a warning, not a rejection:
the facts topic is the systems of record's, and a pack may be loaded later that declares the
name. :class:`UndeclaredScopes` collects such names (compared as words, like
:meth:`~auditor.ledger.model.Scope.covers`), bounded, for ``auditor check --ledger`` and the
daemon's log.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from auditor.ledger.claims import MARKETING
from auditor.ledger.model import THIRD_PARTY_SHARING, Scope, name_key
from auditor.policy.engine import CompiledPack

#: distinct undeclared names kept (the rest are only counted)
MAX_NAMES = 64
#: characters of a name shown
SHOWN = 64


class Undeclared(NamedTuple):
    field: str          # "purpose" or "recipient_type"
    name: str           # as the first fact spelt it, cut to SHOWN characters
    facts: int          # facts seen with it
    first: str          # where the first was (a line or partition@offset)


class UndeclaredScopes:
    """Scope names of facts that no loaded pack declares, by (field, name as words)."""

    def __init__(self, packs: Iterable[CompiledPack]) -> None:
        compiled = list(packs)
        # the join asks about marketing consent and opt-out whatever a pack calls its purposes, and a scope
        # naming third-party sharing covers every disclosure (model.Scope.covers)
        self.purposes = frozenset([name_key(MARKETING), name_key(THIRD_PARTY_SHARING),
                                   *(name_key(p) for c in compiled for p in c.pack.purposes)])
        self.recipient_types = frozenset(name_key(r) for c in compiled for r in c.pack.recipients)
        self.packs = tuple(sorted(c.id for c in compiled))
        self._seen: dict[tuple[str, str], list[object]] = {}
        self.overflow = 0  # facts with a further undeclared name past MAX_NAMES

    def declares(self, scope: Scope) -> bool:
        """Whether every name ``scope`` gives is declared (a scope naming none is fine)."""
        return ((scope.purpose is None or name_key(scope.purpose) in self.purposes)
                and (scope.recipient_type is None or name_key(scope.recipient_type) in self.recipient_types))

    def check(self, scope: Scope | None, where: str, facts: int = 1) -> Undeclared | None:
        """Note ``facts`` facts with ``scope``: returns the first undeclared name seen for the first
        time (so the daemon logs each name once)."""
        if scope is None or not self.packs:
            return None
        new = None
        for field_name, name, known in (("purpose", scope.purpose, self.purposes),
                                        ("recipient_type", scope.recipient_type, self.recipient_types)):
            if name is None or name_key(name) in known:
                continue
            key = (field_name, name_key(name))
            entry = self._seen.get(key)
            if entry is not None:
                entry[1] = int(entry[1]) + facts  # type: ignore[call-overload]
            elif len(self._seen) < MAX_NAMES:
                self._seen[key] = [name[:SHOWN], facts, where]
                new = new or Undeclared(field_name, name[:SHOWN], facts, where)
            else:
                self.overflow += facts
        return new

    def found(self) -> list[Undeclared]:
        return [Undeclared(f, str(v[0]), int(v[1]), str(v[2]))  # type: ignore[call-overload]
                for (f, _), v in self._seen.items()]

    def message(self, u: Undeclared) -> str:
        return (f"facts scoped to {u.field} {u.name!r} ({u.facts}, the first at {u.first}): no loaded pack "
                f"({', '.join(self.packs)}) declares that {u.field.replace('_', ' ')}, so these facts answer no "
                "question of an event judged under them (a misspelt scope? a pack not loaded?)")
