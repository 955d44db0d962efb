"""Replay a trail for an investigation: filter, format, count, and re-judge under another pack.

Records are streamed segment by segment. Every equality filter is also a byte pattern (the
Avro encoding of the wanted string) that must occur in a record's bytes, so records that cannot
match are skipped without being decoded; only candidates are decoded and checked exactly.
A subject or actor is given raw and pseudonymised with the trail's key on the fly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from auditor.errors import TrailCorruption
from auditor.policy.decision import Decision
from auditor.trail import render
from auditor.trail.canonical import enc_str, record_from_bytes
from auditor.trail.record import AuditRecord, record_to_event
from auditor.trail.source import Issue, TrailSource, as_source

#: ``--verdict REJECTED``: the records of inputs that could not be judged (``--stats`` counts them so)
REJECTED = "REJECTED"
VERDICTS = ("ALLOW", "VIOLATION", REJECTED)


@dataclass(frozen=True)
class ReplayFilter:
    subject: str | None = None          # pseudonyms, not raw ids
    actor: str | None = None
    recipient_type: str | None = None
    purpose: str | None = None
    category: str | None = None
    verdict: str | None = None
    rule: str | None = None
    pack: str | None = None
    chain: str | None = None
    event_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def needs_facts(self) -> bool:
        return any(v is not None for v in (self.subject, self.actor, self.recipient_type, self.purpose,
                                           self.category, self.rule, self.pack, self.since, self.until)) or \
            self.verdict not in (None, REJECTED)

    def tokens(self) -> tuple[bytes, ...]:
        """Byte patterns a matching record's encoding must contain (a cheap pre-filter)."""
        verdict = None if self.verdict == REJECTED else self.verdict
        values = (self.subject, self.actor, self.recipient_type, self.purpose, self.category, verdict,
                  self.rule, self.pack, self.chain, self.event_id)
        return tuple(enc_str(v) for v in values if v is not None)

    def matches(self, r: AuditRecord) -> bool:
        if self.chain is not None and r.chain_id != self.chain:
            return False
        if self.event_id is not None and r.event_id != self.event_id:
            return False
        if self.verdict == REJECTED and r.rejection is None:
            return False
        if not self.needs_facts():
            return True
        f, d = r.facts, r.decision
        if f is None:
            return False
        checks = (
            self.subject is None or f.subject_pseudonym == self.subject,
            self.actor is None or f.actor_pseudonym == self.actor,
            self.recipient_type is None
            or (f.recipient is not None and f.recipient.type == self.recipient_type),
            self.purpose is None or f.purpose == self.purpose,
            self.category is None or self.category in f.data_categories,
            self.verdict is None or (d is not None and d.verdict.value == self.verdict),
            self.rule is None or (d is not None and (self.rule in d.rule_ids or d.permitted_by == self.rule)),
            self.pack is None or (d is not None and d.pack_id == self.pack),
            self.since is None or f.occurred_at >= self.since,
            self.until is None or f.occurred_at < self.until,
        )
        return all(checks)


def iter_records(trail: TrailSource | Path | str, flt: ReplayFilter = ReplayFilter(), *,
                 progress: Callable[[int], None] | None = None) -> Iterator[AuditRecord]:
    """Matching records in trail order, decoding only candidates.

    A source-level problem (a damaged segment) raises TrailCorruption naming it: a replay that
    silently skipped records would answer an access request wrongly.
    """
    tokens = flt.tokens()
    for chunk in as_source(trail).chunks():
        if isinstance(chunk, Issue):
            if chunk.kind == "reordered":
                continue  # the order of segments does not change what they hold
            raise TrailCorruption(f"{chunk}; run `auditor verify`")
        buf = chunk.buf
        for f in chunk.frames:
            data = buf[f.start:f.end]
            if tokens and not all(t in data for t in tokens):
                continue
            record = record_from_bytes(data)
            if flt.matches(record):
                yield record
        if progress:
            progress(len(buf))


# ---------------------------------------------------------------- output

# The output formats live in auditor.trail.render; re-exported for callers of this module.
record_json = render.record_json
write_records = render.write_records


@dataclass
class Stats:
    records: int = 0
    by_recipient: Counter[str] = field(default_factory=Counter)
    by_purpose: Counter[str] = field(default_factory=Counter)
    by_verdict: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)

    def add(self, r: AuditRecord) -> None:
        self.records += 1
        if r.facts is None:
            self.by_verdict["REJECTED"] += 1
            return
        self.by_recipient[r.facts.recipient.type if r.facts.recipient else "(none)"] += 1
        self.by_purpose[r.facts.purpose] += 1
        if r.decision is not None:
            self.by_verdict[r.decision.verdict.value] += 1
            self.by_rule.update(r.decision.rule_ids)

    def render(self) -> str:
        lines = [f"records: {self.records}"]
        for title, counter in (("recipient", self.by_recipient), ("purpose", self.by_purpose),
                               ("verdict", self.by_verdict), ("violated rule", self.by_rule)):
            lines.append(f"\nby {title}:")
            lines += [f"  {count:>10}  {key}" for key, count in counter.most_common()]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- what-if re-evaluation

@dataclass(frozen=True)
class VerdictChange:
    chain: str
    seq: int
    event_id: str | None
    old_verdict: str
    new_verdict: str
    rules_added: tuple[str, ...]
    rules_removed: tuple[str, ...]
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        why = "; ".join(self.reasons) or "no violations under the new pack"
        delta = " ".join([*(f"+{r}" for r in self.rules_added), *(f"-{r}" for r in self.rules_removed)])
        return (f"{self.chain}#{self.seq} {self.event_id}: {self.old_verdict} -> {self.new_verdict} "
                f"[{delta}] {why}")


@dataclass
class WhatIf:
    judged: int = 0
    changed: int = 0
    transitions: Counter[str] = field(default_factory=Counter)


def reevaluate(records: Iterable[AuditRecord], pack: Any, evaluate: Callable[[Any, Any], Decision],
               summary: WhatIf) -> Iterator[VerdictChange]:
    """Re-judge each decision record under ``pack``; yield the ones whose outcome changes."""
    for r in records:
        if r.facts is None or r.decision is None:
            continue
        if r.ledger is None:
            new = evaluate(record_to_event(r), pack)
        else:  # judged with the subject ledger: the same answers again, from the record (issue 12)
            from auditor.ledger.join import rejudge

            new = rejudge(record_to_event(r), r.ledger, pack, evaluate)
        summary.judged += 1
        old_rules, new_rules = set(r.decision.rule_ids), set(new.violated_rule_ids)
        if new.verdict == r.decision.verdict and old_rules == new_rules:
            continue
        summary.changed += 1
        summary.transitions[f"{r.decision.verdict.value} -> {new.verdict.value}"] += 1
        added = tuple(sorted(new_rules - old_rules))
        yield VerdictChange(r.chain_id, r.seq, r.event_id, r.decision.verdict.value, new.verdict.value,
                            added, tuple(sorted(old_rules - new_rules)),
                            tuple(f"{v.rule.rule_id} ({v.rule.clause}): {v.reason}" for v in new.violations
                                  if v.rule.rule_id in added))
