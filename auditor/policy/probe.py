"""``auditor policy probe``: a search for laundering paths.

From each example the pack judges a VIOLATION, change one fact at a time (the kind; each category
to every other declared category; the recipient type; the actor's organisation and type; the
identifiability; the purpose; the subject's region) and report every change that turns the
violation into an ALLOW, with the permit that allowed it. Each finding is either allowed by the
policy's text (a reviewer records it, with an example that shows it) or a hole in the pack.

Reviewed findings live in a YAML file per pack::

    pack: ipasar
    reviewed:
      - example: ipasar-mkt-noconsent
        change: "purpose: marketing -> customer_service"
        allowed_by: ipasar.use.customer-service
        resolution: text-allows           # the only resolution: the text allows the changed event
        shown_by: ipasar-use-cs-dispute   # an example of the table that shows it
        note: "2.4 lets customer service use registration data; no consent is asked"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import PolicyError
from auditor.events.model import ActorOrganisation, ActorType, Event, EventKind, Identifiability, Recipient
from auditor.policy import conditions as c
from auditor.policy.decision import Verdict
from auditor.policy.engine import CompiledPack, evaluate
from auditor.policy.examples import Example
from auditor.policy.model import Pack
from auditor.policy.yamlsrc import LineDict, load_yaml

#: Regions tried besides those the pack's rules name: a spread of common ones, and unknown.
SAMPLE_REGIONS = ("US", "SG", "MY", "ID", "CN", "JP", "GB", "DE", "FR", "IN", "BR", "AU")
RESOLUTIONS = ("text-allows",)


@dataclass(frozen=True, order=True)
class Finding:
    example: str
    change: str
    allowed_by: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.example, self.change, self.allowed_by)


@dataclass(frozen=True)
class Review:
    finding: Finding
    resolution: str
    shown_by: str
    note: str
    line: int


def _v(value: object) -> str:
    value = getattr(value, "value", value)
    return "unknown" if value is None else str(value)


def _regions(pack: Pack) -> list[str | None]:
    named: set[str] = set(SAMPLE_REGIONS)
    for rule in pack.rules:
        for test in (*rule.scope.tests, *rule.conditions):
            if isinstance(test, c.FactIn) and test.fact == "subject.region":
                named |= {r for r in test.accepted if isinstance(r, str) and len(r) == 2}
    return [None, *sorted(named)]


def single_changes(e: Event, pack: Pack) -> Iterator[tuple[str, Event]]:
    """Every event that differs from ``e`` in one fact, with a label naming the change."""
    rep = dataclasses.replace
    for kind in EventKind:
        if kind is e.kind:
            continue
        if kind is EventKind.DISCLOSURE:
            for rtype in sorted(pack.recipients):
                yield (f"kind: {e.kind.value} -> DISCLOSURE to {rtype}",
                       rep(e, kind=kind, recipient=Recipient(rtype, "probe-recipient")))
        else:
            yield f"kind: {e.kind.value} -> {kind.value}", rep(e, kind=kind, recipient=None)
    for i, cat in enumerate(e.data_categories):
        for other in sorted(pack.categories):
            if other not in e.data_categories:
                cats = (*e.data_categories[:i], other, *e.data_categories[i + 1:])
                yield f"category: {cat} -> {other}", rep(e, data_categories=cats)
    if e.recipient is not None:
        for rtype in sorted(pack.recipients):
            if rtype != e.recipient.type:
                yield f"recipient: {e.recipient.type} -> {rtype}", rep(e, recipient=rep(e.recipient, type=rtype))
    for org in ActorOrganisation:
        if org is not e.actor.organisation:
            yield (f"actor.organisation: {e.actor.organisation.value} -> {org.value}",
                   rep(e, actor=rep(e.actor, organisation=org)))
    for atype in ActorType:
        if atype is not e.actor.type:
            yield f"actor.type: {e.actor.type.value} -> {atype.value}", rep(e, actor=rep(e.actor, type=atype))
    for ident in Identifiability:
        if ident is not e.identifiability:
            yield f"identifiability: {e.identifiability.value} -> {ident.value}", rep(e, identifiability=ident)
    for purpose in sorted(pack.purposes):
        if purpose != e.purpose:
            yield f"purpose: {e.purpose} -> {purpose}", rep(e, purpose=purpose)
    current = e.subject.region.upper() if e.subject.region else None
    for region in _regions(pack):
        if region != current:
            yield (f"region: {_v(current)} -> {_v(region)}", rep(e, subject=rep(e.subject, region=region)))


def probe(pack: CompiledPack, examples: list[Example]) -> list[Finding]:
    """Every single-fact change that turns a violating example into an ALLOW."""
    out: set[Finding] = set()
    for ex in examples:
        if evaluate(ex.event, pack).verdict is not Verdict.VIOLATION:
            continue
        for change, event in single_changes(ex.event, pack.pack):
            d = evaluate(event, pack)
            if d.verdict is Verdict.ALLOW and d.permitted_by is not None:
                out.add(Finding(ex.id, change, d.permitted_by.rule_id))
    return sorted(out)


def load_reviews(path: Path, pack_id: str, example_ids: set[str]) -> list[Review]:
    """Read a reviewed-findings file; every fault is a PolicyError naming the line."""
    doc = load_yaml(path)
    if not isinstance(doc, LineDict) or not isinstance(doc.get("reviewed", []), list):
        raise PolicyError("a reviewed-findings file is a mapping with 'pack' and a 'reviewed' list", path=str(path))
    if doc.get("pack") != pack_id:
        raise PolicyError(f"reviews pack '{doc.get('pack')}', not '{pack_id}'", path=str(path),
                          line=doc.line_of("pack"))
    out = []
    faults = []
    for entry in doc.get("reviewed") or []:
        line = getattr(entry, "line", None)
        if not isinstance(entry, dict):
            faults.append(PolicyError("each reviewed entry is a mapping", path=str(path), line=line))
            continue
        missing = [k for k in ("example", "change", "allowed_by", "resolution", "shown_by", "note")
                   if not str(entry.get(k) or "").strip()]
        if missing:
            faults.append(PolicyError(f"reviewed entry lacks {', '.join(missing)}", path=str(path), line=line))
            continue
        if entry["resolution"] not in RESOLUTIONS:
            faults.append(PolicyError(f"resolution '{entry['resolution']}' is not one of {', '.join(RESOLUTIONS)} "
                                      "(a hole in the pack is fixed in the pack, not reviewed)", path=str(path),
                                      line=line))
        if example_ids and entry["shown_by"] not in example_ids:
            faults.append(PolicyError(f"shown_by '{entry['shown_by']}' is not an example of the table",
                                      path=str(path), line=line))
        out.append(Review(Finding(str(entry["example"]), str(entry["change"]), str(entry["allowed_by"])),
                          str(entry["resolution"]), str(entry["shown_by"]), str(entry["note"]), line or 0))
    if faults:
        from auditor.errors import PolicyLintError

        raise PolicyLintError(faults)
    return out


def triage(findings: list[Finding], reviews: list[Review]) -> tuple[list[Finding], list[Review]]:
    """(findings nobody reviewed, reviews that match no current finding: stale)."""
    reviewed = {r.finding.key for r in reviews}
    current = {f.key for f in findings}
    return [f for f in findings if f.key not in reviewed], [r for r in reviews if r.finding.key not in current]


def render_reviews(pack_id: str, findings: list[Finding]) -> str:
    """A reviewed-findings skeleton for the given findings (the reviewer fills shown_by and note)."""
    import json

    lines = [f"pack: {pack_id}", "reviewed:"]
    for f in findings:
        lines += [f"  - example: {f.example}", f"    change: {json.dumps(f.change)}",
                  f"    allowed_by: {f.allowed_by}", "    resolution: text-allows", "    shown_by: ",
                  "    note: "]
    return "\n".join(lines) + "\n"
