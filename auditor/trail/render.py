"""Every fact of an audit record, for people and for tools: JSON, CSV and a readable table.

:func:`record_json` is the record shaped exactly like ``schemas/audit_record.avsc`` (the same
keys, nested the same way, ``body_len`` included), with hashes in hex and times in ISO-8601 with
microseconds; :func:`record_from_json` reads it back, so ``replay --format jsonl`` loses nothing
(a test re-encodes the parsed line and gets the record's own bytes). The CSV has one column per
leaf field of the schema (``facts.subject_pseudonym``, ...); the table groups the same facts into
a few multi-line cells. Ids and hashes are never cut.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable, TextIO

from auditor.events.codec import schema_path
from auditor.trail.canonical import SCHEMA_NAME, encode_body, record_from_mapping
from auditor.trail.record import AuditRecord

_HEX_FIELDS = ("prev_hash", "input_digest", "record_hash")


# ---------------------------------------------------------------- JSON

def record_json(r: AuditRecord) -> dict[str, Any]:
    """The record as a JSON-ready dict with the schema's keys (hashes hex, times ISO-8601)."""
    f, d, j, s = r.facts, r.decision, r.rejection, r.source
    return {
        "chain_id": r.chain_id, "seq": r.seq, "prev_hash": r.prev_hash.hex(),
        "body_len": len(encode_body(r)), "record_type": r.record_type.value,
        "source": {"topic": s.topic, "partition": s.partition, "offset": s.offset, "file": s.file,
                   "line": s.line},
        "event_id": r.event_id, "input_digest": r.input_digest.hex(),
        "processed_at": r.processed_at.isoformat(timespec="microseconds"),
        "auditor_version": r.auditor_version, "instance_id": r.instance_id,
        "pseudonym_key_id": r.pseudonym_key_id,
        "facts": None if f is None else {
            "kind": f.kind.value, "occurred_at": f.occurred_at.isoformat(timespec="microseconds"),
            "policy_id": f.policy_id, "source_system": f.source_system, "actor_type": f.actor_type.value,
            "actor_pseudonym": f.actor_pseudonym, "actor_role": f.actor_role,
            "subject_pseudonym": f.subject_pseudonym, "subject_age": f.subject_age,
            "subject_is_minor": f.subject_is_minor, "subject_region": f.subject_region,
            "data_categories": list(f.data_categories), "purpose": f.purpose,
            "recipient": None if f.recipient is None else {
                "type": f.recipient.type, "id": f.recipient.id, "country": f.recipient.country,
                "on_our_behalf": f.recipient.on_our_behalf},
            "identifiability": f.identifiability.value, "legal_basis": f.legal_basis,
            "legal_request_type": f.legal_request_type.value,
            "consent_marketing": f.consent_marketing,
            "consent_third_party_sharing": f.consent_third_party_sharing,
            "consent_guardian": f.consent_guardian, "consent_marketing_opt_out": f.consent_marketing_opt_out,
            "cross_border": f.cross_border, "destination_country": f.destination_country,
            "safeguard": f.safeguard.value, "attributes": dict(f.attributes),
        },
        "decision": None if d is None else {
            "verdict": d.verdict.value, "pack_id": d.pack_id, "pack_hash": d.pack_hash,
            "violations": [{"rule_id": v.rule_id, "clause": v.clause, "kind": v.kind, "severity": v.severity,
                            "reason": v.reason} for v in d.violations],
            "permitted_by": d.permitted_by, "permitted_clause": d.permitted_clause,
        },
        "rejection": None if j is None else {"reason": j.reason, "message": j.message},
        "ledger": None if r.ledger is None else {
            "partition": r.ledger.partition, "through_offset": r.ledger.through_offset,
            "reads": [{"question": q.question, "purpose": q.purpose, "recipient_type": q.recipient_type,
                       "recipient_id": q.recipient_id, "value": q.value, "fact_offsets": list(q.fact_offsets)}
                      for q in r.ledger.reads],
            "corrects": None if r.ledger.corrects is None else {
                "chain_id": r.ledger.corrects.chain_id, "seq": r.ledger.corrects.seq,
                "cause_offsets": list(r.ledger.corrects.cause_offsets)},
        },
        "actor_organisation": None if r.actor_organisation is None else r.actor_organisation.value,
        "legal_request_reference": r.legal_request_reference,
        "record_hash": r.record_hash.hex(),
    }


def record_from_json(doc: dict[str, Any]) -> AuditRecord:
    """The record :func:`record_json` made (``body_len`` is implied by the other fields)."""
    m = dict(doc)
    for key in _HEX_FIELDS:
        m[key] = bytes.fromhex(m[key])
    m["processed_at"] = datetime.fromisoformat(m["processed_at"])
    if m.get("facts") is not None:
        m["facts"] = dict(m["facts"], occurred_at=datetime.fromisoformat(m["facts"]["occurred_at"]))
    return record_from_mapping(m)


# ---------------------------------------------------------------- CSV

def _leaf_columns(fields: list[dict[str, Any]], prefix: str = "") -> list[str]:
    cols: list[str] = []
    for fld in fields:
        kind = fld["type"]
        branches = kind if isinstance(kind, list) else [kind]
        nested = [b for b in branches if isinstance(b, dict) and b.get("type") == "record"]
        if nested:
            cols += _leaf_columns(nested[0]["fields"], f"{prefix}{fld['name']}.")
        else:
            cols.append(prefix + fld["name"])
    return cols


@lru_cache(maxsize=1)
def csv_columns() -> list[str]:
    """One column per leaf field of the audit record schema, in schema order."""
    with schema_path(SCHEMA_NAME).open("rb") as fh:
        return _leaf_columns(json.load(fh)["fields"])


def _flatten(doc: dict[str, Any] | None, prefix: str, out: dict[str, Any]) -> None:
    for key, value in (doc or {}).items():
        if isinstance(value, dict) and key != "attributes":
            _flatten(value, f"{prefix}{key}.", out)
        elif isinstance(value, (list, dict)):
            out[prefix + key] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        else:
            out[prefix + key] = value


def csv_row(r: AuditRecord) -> dict[str, Any]:
    row: dict[str, Any] = {}
    _flatten(record_json(r), "", row)
    columns = set(csv_columns())
    # an absent nested record (facts of a rejection, ...) leaves its columns empty
    return {k: v for k, v in row.items() if k in columns or v is not None}


# ---------------------------------------------------------------- table

def _yn(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def organisation_text(r: AuditRecord) -> str:
    """The actor's organisation as a reader should see it (revisions 1 and 2 did not store it)."""
    org = r.actor_organisation
    if org is None:
        return "not recorded (a record of schema revision 1 or 2)"
    return {"OURS": "ours", "PROCESSOR": "a processor acting for us", "THIRD_PARTY": "a third party",
            "UNKNOWN": "unknown (the event did not say)"}.get(org.value, org.value)


def table_cells(r: AuditRecord) -> dict[str, str]:
    """Every fact of the record, grouped into the table's cells (one line a fact)."""
    doc = record_json(r)
    f, d, j = r.facts, r.decision, r.rejection
    cells = {
        "record": f"{r.chain_id} #{r.seq}\nevent {r.event_id or '-'}\nfrom {r.source}",
        "when": (f"occurred {doc['facts']['occurred_at']}\n" if f else "") + f"processed {doc['processed_at']}",
    }
    if f is not None:
        cells["what"] = (f"{f.kind.value} for {f.purpose}\ndata: {', '.join(f.data_categories) or '-'}\n"
                         f"{f.identifiability.value.lower()}\nsystem {f.source_system}\npolicy {f.policy_id}")
        age = "unknown" if f.subject_age is None else str(f.subject_age)
        cells["subject"] = (f"{f.subject_pseudonym}\nage {age}, minor {_yn(f.subject_is_minor)}, "
                            f"region {f.subject_region or 'unknown'}\nconsent: marketing {_yn(f.consent_marketing)}, "
                            f"sharing {_yn(f.consent_third_party_sharing)}, guardian {_yn(f.consent_guardian)}, "
                            f"opted out {_yn(f.consent_marketing_opt_out)}")
        cells["actor"] = (f"{f.actor_type.value.lower()} ({f.actor_role or 'no role'})\n"
                          f"organisation {organisation_text(r)}\n{f.actor_pseudonym}")
        rc = f.recipient
        to = "no recipient" if rc is None else (
            f"{rc.type} {rc.id}\ncountry {rc.country or 'unknown'}, on our behalf {_yn(rc.on_our_behalf)}")
        transfer = (f"cross-border to {f.destination_country or 'unknown'} ({f.safeguard.value.lower()})"
                    if f.cross_border else f"not cross-border (safeguard {f.safeguard.value.lower()}"
                    + (f", destination {f.destination_country}" if f.destination_country else "") + ")")
        cells["recipient"] = (f"{to}\n{transfer}\nlegal basis {f.legal_basis or 'none'}, "
                              f"request {f.legal_request_type.value.lower()}"
                              + (f"\nrequest reference {r.legal_request_reference}"
                                 if r.legal_request_reference is not None else ""))
        if f.attributes:
            cells["what"] += "\n" + "\n".join(f"{k}={v}" for k, v in f.attributes)
    if d is not None:
        lines = [f"{d.verdict.value} under {d.pack_id}"]
        lines += [f"{v.rule_id} ({v.clause}; {v.kind}, {v.severity}): {v.reason}" for v in d.violations]
        if d.permitted_by:
            lines.append(f"permitted by {d.permitted_by} ({d.permitted_clause})")
        cells["decision"] = "\n".join(lines)
    if j is not None:
        cells["decision"] = f"REJECTED: {j.reason}\n{j.message}"
    if r.ledger is not None:
        lg = r.ledger
        lines = [f"ledger partition {lg.partition} through offset {lg.through_offset}"]
        lines += [f"{q.question}" + (f" for {q.purpose}" if q.purpose else "")
                  + (f" to {q.recipient_type} {q.recipient_id or ''}".rstrip() if q.recipient_type else "")
                  + f": {q.value} (facts {', '.join(map(str, q.fact_offsets))})" for q in lg.reads]
        if lg.corrects is not None:
            lines.append(f"corrects {lg.corrects.chain_id} #{lg.corrects.seq} "
                         f"(late facts {', '.join(map(str, lg.corrects.cause_offsets))})")
        cells["decision"] = cells.get("decision", "") + "\n" + "\n".join(lines)
    cells["integrity"] = "\n".join([
        f"record {doc['record_hash']}", f"prev   {doc['prev_hash']}", f"input  {doc['input_digest']}",
        *([f"pack   {d.pack_hash}"] if d is not None else []),
        f"key {r.pseudonym_key_id}, instance {r.instance_id}, auditor {r.auditor_version}"])
    return cells


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


TABLE_COLUMNS = ("record", "when", "what", "subject", "actor", "recipient", "decision", "integrity")


class TableWriter:
    """A rich table streamed in pages, so a long replay neither waits nor holds every row.

    Cells wrap at spaces only: each column is at least as wide as its longest id or hash, so an id
    is never cut or broken. Written to a file or a pipe, the table is as wide as its content.
    """

    def __init__(self, out: TextIO, *, width: int | None = None, page: int = 200) -> None:
        from rich.console import Console

        tty = bool(getattr(out, "isatty", lambda: False)())
        self.console = Console(file=out, width=width or (None if tty else 4000), soft_wrap=False,
                               highlight=False, markup=False, emoji=False, no_color=not tty)
        self.page = page
        self.rows: list[dict[str, str]] = []

    def add(self, r: AuditRecord) -> None:
        self.rows.append(table_cells(r))
        if len(self.rows) >= self.page:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, show_lines=True, expand=False)
        for col in TABLE_COLUMNS:
            widest = max(_longest_word(cells.get(col, "")) for cells in self.rows)
            table.add_column(col.upper(), overflow="fold", min_width=max(widest, len(col)))
        for cells in self.rows:
            table.add_row(*(cells.get(c, "") for c in TABLE_COLUMNS))
        self.console.print(table, crop=False)
        self.rows.clear()


def write_records(records: Iterable[AuditRecord], out: TextIO | Any, fmt: str) -> int:
    """Write records as ``jsonl``, ``csv`` or ``table``; return how many."""
    n = 0
    if fmt == "jsonl":
        for r in records:
            out.write(json.dumps(record_json(r), separators=(",", ":"), ensure_ascii=False) + "\n")
            n += 1
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(csv_columns()))
        writer.writeheader()
        for r in records:
            writer.writerow(csv_row(r))
            n += 1
    else:
        table = TableWriter(out)
        for r in records:
            table.add(r)
            n += 1
        table.flush()
    return n
