"""A per-subject report: everything the trail holds about one person, for an access request.

The report is Markdown: a summary (what kinds of processing, which categories, purposes and
recipients, how many violations), then one section each for what was accessed, used and
disclosed, every event with its time, purpose, categories, who acted (role and type, not the
employee's identity), to whom (for disclosures), and the rule and clause it was judged under.
The person appears only as the pseudonym the trail holds; the identifier given to find them is
never written.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Iterable

from auditor.events.model import EventKind
from auditor.trail.record import AuditRecord
from auditor.trail.render import organisation_text

_SECTIONS = ((EventKind.ACCESS, "Accessed", "who inside the organisation read the data"),
             (EventKind.USE, "Used", "what the data was used for"),
             (EventKind.DISCLOSURE, "Disclosed", "who the data was given to"))


def _t(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rule(r: AuditRecord) -> str:
    d = r.decision
    if d is None:
        return ""
    if d.violations:
        return "; ".join(f"**violates** {v.rule_id} (clause {v.clause}): {v.reason}" for v in d.violations)
    if d.permitted_by:
        return f"permitted by {d.permitted_by} (clause {d.permitted_clause})"
    return d.verdict.value


def subject_report(records: Iterable[AuditRecord], pseudonym: str, key_id: str, trail: str,
                   now: datetime) -> str:
    rows = sorted((r for r in records if r.facts is not None), key=lambda r: r.facts.occurred_at)  # type: ignore[union-attr]
    by_kind: dict[EventKind, list[AuditRecord]] = {k: [] for k, _, _ in _SECTIONS}
    for r in rows:
        assert r.facts is not None
        by_kind.setdefault(r.facts.kind, []).append(r)
    purposes: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    recipients: Counter[str] = Counter()
    violations = 0
    for r in rows:
        f = r.facts
        assert f is not None
        purposes[f.purpose] += 1
        categories.update(f.data_categories)
        if f.recipient is not None:
            recipients[f"{f.recipient.type} '{f.recipient.id}'" + (f" ({f.recipient.country})"
                                                                  if f.recipient.country else "")] += 1
        if r.decision is not None and r.decision.violations:
            violations += 1
    out = [
        "# Personal data processing report",
        "",
        f"- Person: the data subject with pseudonym `{pseudonym}` (keyed HMAC, key id `{key_id}`); "
        "the identifier used to find them is not stored in the trail or in this report.",
        f"- Source: the audit trail `{trail}`, every record about this person.",
        f"- Prepared: {_t(now)}.",
        f"- Period covered: {_t(rows[0].facts.occurred_at)} to {_t(rows[-1].facts.occurred_at)}." if rows  # type: ignore[union-attr]
        else "- Period covered: no record holds this person's data.",
        "",
        "## Summary",
        "",
        f"- {len(rows)} event(s): " + ", ".join(f"{len(by_kind.get(k, []))} {title.lower()}"
                                                for k, title, _ in _SECTIONS) + ".",
        "- Categories of data: " + (", ".join(f"{c} ({n})" for c, n in categories.most_common()) or "none") + ".",
        "- Purposes: " + (", ".join(f"{p} ({n})" for p, n in purposes.most_common()) or "none") + ".",
        "- Recipients: " + (", ".join(f"{p} ({n})" for p, n in recipients.most_common()) or "none") + ".",
        f"- Events judged to break the privacy policy: {violations}.",
    ]
    for kind, title, what in _SECTIONS:
        items = by_kind.get(kind, [])
        out += ["", f"## {title} ({len(items)})", "", f"_{what}_", ""]
        if not items:
            out.append("None.")
            continue
        head = ["When", "Data", "Purpose", "By"] + (["To", "Legal request", "Transfer"] if kind is EventKind.DISCLOSURE
                                                    else []) + ["Policy", "Rule", "Record"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in items:
            f = r.facts
            assert f is not None
            by = f.actor_type.value.lower() + (f" ({f.actor_role})" if f.actor_role else "") + (
                f", {organisation_text(r)}" if r.actor_organisation is not None else "")
            cells = [_t(f.occurred_at), ", ".join(f.data_categories), f.purpose, by]
            if kind is EventKind.DISCLOSURE:
                rc = f.recipient
                cells += [f"{rc.type} '{rc.id}'" + (f" in {rc.country}" if rc.country else "") if rc else "",
                          f.legal_request_type.value.lower().replace("_", " ")
                          + (f" ({r.legal_request_reference})" if r.legal_request_reference else ""),
                          f"to {f.destination_country or '?'} ({f.safeguard.value.lower().replace('_', ' ')})"
                          if f.cross_border else "none"]
            pack = f"{r.decision.pack_id}" if r.decision else ""
            cells += [pack, _rule(r), f"{r.chain_id}#{r.seq}"]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    out += ["", "Each record can be proven with `auditor evidence TRAIL --chain CHAIN --seq SEQ` "
                "(the Record column is CHAIN#SEQ).", ""]
    return "\n".join(out)
