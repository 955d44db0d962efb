"""Checks across a whole pack, after its rules are parsed: vocabulary nobody uses, and rules that
silently rely on an absent fact (warnings)."""

from __future__ import annotations

from typing import Any, Protocol

from auditor.errors import PolicyError
from auditor.policy.model import Effect, Rule, Term
from auditor.policy.yamlsrc import LineDict


class _Reporter(Protocol):
    path: str

    def fail(self, message: str, line: int | None) -> None: ...


#: What each optional fact's absence means when a test does not list ``unknown``.
ABSENCE = {
    "subject.minor": "a subject of unknown age (no age, no is_minor)",
    "subject.region": "a subject of unknown region",
    "actor.role": "an actor with no role",
    "actor.organisation": "an actor of unknown organisation",
    "recipient.on_our_behalf": "a recipient whose on-our-behalf status is unknown",
    "recipient.country": "a recipient of unknown country",
    "transfer.destination_country": "a transfer of unknown destination",
    "legal_basis": "an event with no legal basis",
    "recipient.abroad": "a recipient or subject of unknown country",
}


def check_pack(p: _Reporter, rules: list[Rule], vocab: Any, categories: dict[str, Term], purposes: dict[str, Term],
               recipients: dict[str, Term], used: dict[str, set[str]],
               pack_absent: tuple[tuple[str, str], ...]) -> list[PolicyError]:
    vnode = vocab if isinstance(vocab, LineDict) else LineDict()
    any_purpose = any(r.scope.purposes is None and r.effect is Effect.PERMIT for r in rules)
    if not any_purpose:
        for purpose in purposes:
            if purpose not in used["purposes"]:
                p.fail(f"purpose '{purpose}' is declared but no rule uses it", _line(vnode, "purposes", purpose))
    for rtype in recipients:
        if rtype not in used["recipients"]:
            p.fail(f"recipient type '{rtype}' is declared but no rule names it", _line(vnode, "recipients", rtype))
    return absence_warnings(p.path, rules, {f for f, _ in pack_absent}) + contents_warnings(p.path, categories, vnode)


def contents_warnings(path: str, categories: dict[str, Term], vocab: LineDict) -> list[PolicyError]:
    """Once some categories declare their contents, one that does not is an element of its own that no
    rule written about elements reaches: say what it holds (an element of its own name is fine)."""
    if not any(t.holds for t in categories.values()):
        return []
    return [PolicyError(f"warning: category '{cid}' declares no contents while others do, so rules about "
                        f"data elements never reach it; give it 'holds: [...]'", path=path,
                        line=_line(vocab, "categories", cid))
            for cid, t in categories.items() if not t.holds]


def absence_warnings(path: str, rules: list[Rule], pack_absent: set[str]) -> list[PolicyError]:
    """A rule that tests an optional fact without saying what its absence means relies on it silently."""
    out = []
    for rule in rules:
        documented = pack_absent | {f for f, _ in rule.absent}
        for test in (*rule.scope.tests, *rule.conditions):
            for fact in sorted(test.unknown_unhandled - documented):
                what = ABSENCE.get(fact, f"an event without attribute '{fact.removeprefix('attributes.')}'")
                where = "scope" if test in rule.scope.tests else "condition"
                effect = ("is out of its scope" if where == "scope" else "fails it")
                out.append(PolicyError(
                    f"warning: rule '{rule.id}' relies on absence: {what} {effect} (`{test.source}`); list "
                    f"`unknown` in the test{' (~ for attributes)' if fact.startswith('attributes.') else ''} "
                    f"or state the reading under `absent: {{{fact}: ...}}`", path=path, line=rule.line))
    return out


def _line(vocab: LineDict, section: str, key: str) -> int:
    node = vocab.get(section)
    return node.line_of(key) if isinstance(node, LineDict) else vocab.line
