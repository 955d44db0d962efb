"""``auditor check``: audit event files offline, one decision per event."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from auditor.errors import ConfigError, DecodeError, PolicyError
from auditor.events.codec import DecodedLine, iter_event_file
from auditor.policy import CompiledPack, Decision, bundled_pack_names, evaluate, load_pack
from auditor.policy.decision import decision_to_dict
from auditor.trail.record import LedgerFacts

HELP = """\
Audit JSON-lines or Avro container files of events offline. Each event is judged under the pack
its policy_id names (bundled packs, and pack files given with --pack), so one file may hold
events of several policies; --policy judges every event under one pack instead, and warns when
an event names another. Prints one decision per event, then a summary of counts by verdict and
by rule. A malformed line (or an event naming no loaded pack) is reported with its file and
line, counted, and skipped; the rest is still audited. '-' reads standard input.

examples:
  auditor check tests/data/events/ipasar.jsonl tests/data/events/inper.jsonl
  auditor check --policy ./my-pack.yaml events.avro --format jsonl > decisions.jsonl
  auditor check --pack ./my-pack.yaml events.jsonl --fail-on-violation    # for CI gates
  auditor check events.jsonl --trail ./trail --keys ~/.auditor/keys       # idempotent: re-runs add nothing
  zcat events.jsonl.gz | auditor check -
  auditor check events.jsonl --ledger facts.jsonl    # consent, opt-outs, age, accounts, services from the ledger

--ledger FACTS.jsonl judges each event against the subject facts (consent granted/withdrawn,
opt-outs, guardian consent, birth dates, account closures, deletion requests, services) in force
at its occurred_at, not against its own claims: an event claiming consent the subject withdrew is
a violation, and the claim itself is reported as CLAIM_CONTRADICTED. The daemon gives the same
verdicts for the same events and facts (README "Subject facts and the ledger").

exit status: 0 audited (violations allowed), 1 violations or malformed input with
--fail-on-violation, 2 usage, configuration or unusable input (the whole file).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="audit event files offline against their policy packs",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("events", nargs="+", metavar="EVENTS",
                   help="JSON-lines or Avro container files; - reads standard input")
    p.add_argument("--policy", metavar="NAME|PATH",
                   help="judge every event under this pack (a bundled id or a pack file), whatever its "
                        "policy_id; a mismatch is counted and warned about")
    p.add_argument("--pack", action="append", default=[], metavar="PATH",
                   help="a pack file events may name by its id (repeatable); bundled packs are always known")
    p.add_argument("--format", choices=["table", "jsonl"], default="table",
                   help="table for people (default), jsonl for tools")
    p.add_argument("--fail-on-violation", action="store_true",
                   help="exit 1 if any event is a violation or any record is malformed")
    p.add_argument("--trail", type=Path, metavar="DIR",
                   help="also append an audit record per event (and per rejected line) to this trail; an "
                        "event already recorded there (same event id) is not recorded again")
    p.add_argument("--keys", type=Path, metavar="DIR",
                   help="key directory for --trail (default: $AUDITOR_KEYS)")
    p.add_argument("--ledger", type=Path, metavar="FACTS",
                   help="subject facts as JSON lines (schemas/subject_fact.avsc): judge each event against "
                        "the facts in force at its time; a faulty line is reported with its line number and "
                        "counted as malformed")
    p.set_defaults(func=run)


class Packs:
    """The pack an event is judged under: --policy for all, or the one its policy_id names."""

    def __init__(self, override: str | None, extra: list[str]) -> None:
        self.override = load_pack(override) if override else None
        self.by_id: dict[str, CompiledPack | None] = {}
        for name in extra:
            pack = load_pack(name)
            if pack.id in self.by_id:
                raise ConfigError(f"two --pack files have the id '{pack.id}'")
            self.by_id[pack.id] = pack
        self.bundled = set(bundled_pack_names())
        self.mismatches: Counter[str] = Counter()
        self.used: dict[str, str] = {}

    def for_event(self, policy_id: str) -> CompiledPack | None:
        if self.override is not None:
            if policy_id != self.override.id:
                self.mismatches[policy_id] += 1
            pack: CompiledPack | None = self.override
        elif policy_id in self.by_id:
            pack = self.by_id[policy_id]
        elif policy_id in self.bundled:
            try:
                pack = self.by_id[policy_id] = load_pack(policy_id)
            except PolicyError as exc:
                raise ConfigError(f"bundled pack '{policy_id}' does not load: {exc}") from exc
        else:
            return None
        if pack is not None:
            self.used[pack.id] = pack.content_hash
        return pack


def _unknown_policy(row: DecodedLine) -> DecodeError:
    # the policy id itself stays out: this message reaches the trail
    return DecodeError("the event names a policy pack that is not loaded (give it with --pack FILE, or judge "
                       "every event under one pack with --policy)", reason="unknown_policy",
                       source=row.source, line=row.line)


class _Table:
    """One line per decision (and per violated rule), streamed. The fixed-width columns come first;
    the clause (often a whole heading of the policy) and the reason share the free last column, so
    a long clause cannot push the reason out of line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        print(f"{'EVENT':<24} {'VERDICT':<9} {'RULE':<60} CLAUSE: REASON", file=out)

    def decision(self, row: DecodedLine, d: Decision, ledger: LedgerFacts | None = None) -> None:
        if not d.violations:
            rule = d.permitted_by.rule_id if d.permitted_by else "-"
            clause = d.permitted_by.clause if d.permitted_by else "-"
            print(f"{d.event_id:<24} {'ALLOW':<9} {rule:<60} {clause}: permitted", file=self.out)
            return
        for i, v in enumerate(d.violations):
            head = f"{d.event_id:<24} {'VIOLATION':<9}" if i == 0 else " " * 34
            print(f"{head} {v.rule_id:<60} {v.rule.clause}: {v.reason}", file=self.out)

    def error(self, err: DecodeError) -> None:
        print(f"{'-':<24} {'MALFORMED':<9} {err.reason:<60} {err}", file=self.out)


class _Jsonl:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def decision(self, row: DecodedLine, d: Decision, ledger: LedgerFacts | None = None) -> None:
        doc = decision_to_dict(d, quote=False)
        doc["source"] = f"{row.source}:{row.line}"
        if ledger is not None:
            doc["ledger"] = [{"question": r.question, "purpose": r.purpose, "recipient_type": r.recipient_type,
                              "recipient_id": r.recipient_id, "value": r.value, "facts_lines": list(r.fact_offsets)}
                             for r in ledger.reads]
        self.out.write(json.dumps(doc, separators=(",", ":")) + "\n")

    def error(self, err: DecodeError) -> None:
        self.out.write(json.dumps({"error": str(err), "reason": err.reason, "source": err.source,
                                   "line": err.line}) + "\n")


def _size(path: str) -> int | None:
    if path == "-":
        return None
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"no such events file: {path}")
    if not p.is_file():
        raise ConfigError(f"not a file: {path}")
    return p.stat().st_size


def run(args: argparse.Namespace) -> int:
    packs = Packs(args.policy, args.pack)
    if args.events.count("-") > 1:
        raise ConfigError("'-' (standard input) can be given once")
    sizes = [_size(p) for p in args.events]
    writer = None
    if args.trail is not None:
        from auditor.cli.offline_trail import OfflineTrail

        writer = OfflineTrail.open(args.trail, args.keys)
    ledger = None
    if args.ledger is not None:
        from auditor.ledger.offline import OfflineLedger

        try:
            ledger = OfflineLedger(args.ledger, writer.pseudonymizer if writer is not None else None)
        except BaseException:
            if writer is not None:
                writer.close()
            raise
    out = sys.stdout
    sink = _Table(out) if args.format == "table" else _Jsonl(out)
    verdicts: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    malformed = 0
    if ledger is not None:
        for err in ledger.report.errors:
            print(f"auditor: facts {err}", file=sys.stderr)
        malformed += len(ledger.report.errors)
    total = None if None in sizes else sum(s or 0 for s in sizes)
    # A progress bar only when a person watches stderr and the decisions go somewhere else.
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="check", leave=False,
               disable=not (sys.stderr.isatty() and not out.isatty()))
    try:
        for path in args.events:
            for row in iter_event_file(path):
                if row.raw:
                    bar.update(len(row.raw) + 1)
                pack = packs.for_event(row.event.policy_id) if row.event is not None else None
                if row.event is not None and pack is None:
                    row = DecodedLine(row.source, row.line, None, _unknown_policy(row), row.raw)
                if row.error is not None or pack is None:
                    assert row.error is not None
                    malformed += 1
                    sink.error(row.error)
                    if writer is not None:
                        writer.reject(row)
                    continue
                assert row.event is not None
                lf = None
                if ledger is None:
                    d = evaluate(row.event, pack)
                else:
                    judged = ledger.judge(row.event, pack)
                    d, lf = judged.decision, judged.ledger
                verdicts[d.verdict.value] += 1
                rules.update(d.violated_rule_ids)
                sink.decision(row, d, lf)
                if writer is not None:
                    writer.record(row, d, ledger=lf)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if ledger is not None:
            ledger.close()
    for policy_id, n in sorted(packs.mismatches.items()):
        assert packs.override is not None
        print(f"auditor: warning: {n} event(s) name policy '{policy_id}' but were judged under --policy "
              f"{packs.override.id}", file=sys.stderr)
    summary: dict[str, object] = {
        "packs": dict(packs.used), "events": sum(verdicts.values()), "verdicts": dict(verdicts),
        "violations_by_rule": dict(rules.most_common()), "malformed": malformed,
        "policy_mismatches": sum(packs.mismatches.values())}
    if len(packs.used) == 1:
        (pack_id, pack_hash), = packs.used.items()
        summary["pack"], summary["pack_hash"] = pack_id, pack_hash
    if writer is not None:
        summary["trail"] = {"recorded": writer.appended, "already_recorded": writer.skipped}
    if ledger is not None:
        summary["ledger"] = {"facts": ledger.report.applied, "malformed_facts": len(ledger.report.errors),
                             "contradicted_claims": ledger.contradictions}
        undeclared = _undeclared_scopes(ledger.report.scopes, packs)
        if undeclared:  # l12b: facts scoped to names no pack used here declares
            summary["ledger"]["undeclared_scope_names"] = undeclared  # type: ignore[index]
    _print_summary(summary, args.format, out)
    if args.fail_on_violation and (verdicts["VIOLATION"] or malformed):
        return 1
    return 0


def _undeclared_scopes(scopes: dict[Any, tuple[int, int]], packs: Packs) -> int:
    """Warn of facts scoped to a purpose or recipient type no pack used here declares (l12b); how many
    such names (at most vocabulary.MAX_NAMES)."""
    from auditor.ledger.vocabulary import UndeclaredScopes

    used = [p for p in (packs.override, *packs.by_id.values()) if p is not None and p.id in packs.used]
    vocabulary = UndeclaredScopes(used)
    for scope, (n, line) in scopes.items():
        vocabulary.check(scope, f"line {line}", n)
    found = vocabulary.found()
    for u in found:
        print(f"auditor: warning: {vocabulary.message(u)}", file=sys.stderr)
    return len(found)


def _print_summary(s: dict[str, object], fmt: str, out: TextIO) -> None:
    if fmt == "jsonl":
        print(json.dumps({"summary": s}), file=sys.stderr)
        return
    verdicts = s["verdicts"]
    used = s["packs"]
    assert isinstance(verdicts, dict) and isinstance(used, dict)
    under = ", ".join(f"{pid} ({str(h)[:19]})" for pid, h in used.items()) or "no pack"
    print(f"\nsummary: {s['events']} events under {under}: "
          f"{verdicts.get('ALLOW', 0)} ALLOW, {verdicts.get('VIOLATION', 0)} VIOLATION, "
          f"{s['malformed']} malformed", file=out)
    lg = s.get("ledger")
    if isinstance(lg, dict):
        print(f"ledger: {lg['facts']} fact(s), {lg['malformed_facts']} malformed; "
              f"{lg['contradicted_claims']} claim(s) of the events contradicted by it", file=out)
    trail = s.get("trail")
    if isinstance(trail, dict):
        print(f"trail: {trail['recorded']} record(s) appended, {trail['already_recorded']} already there",
              file=out)
    by_rule = s["violations_by_rule"]
    assert isinstance(by_rule, dict)
    for rule, n in by_rule.items():
        print(f"  {n:>6}  {rule}", file=out)
