"""``auditor check``: audit event files offline, one decision per event."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from auditor.errors import ConfigError, DecodeError
from auditor.events.codec import DecodedLine, iter_event_file
from auditor.policy import Decision, evaluate, load_pack
from auditor.policy.decision import decision_to_dict

HELP = """\
Audit JSON-lines or Avro container files of events against one policy pack, offline.
Prints one decision per event, then a summary of counts by verdict and by rule.
A malformed line is reported with its file and line, counted, and skipped; the rest is
still audited.

examples:
  auditor check --policy ipasar tests/data/ipasar.jsonl
  auditor check --policy ./my-pack.yaml events.avro --format jsonl > decisions.jsonl
  auditor check --policy inper events.jsonl --fail-on-violation      # for CI gates
  auditor check --policy ipmart events.jsonl --trail ./trail --keys ~/.auditor/keys

exit status: 0 audited (violations allowed), 1 violations or malformed input with
--fail-on-violation, 2 usage or configuration error.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="audit event files offline against a policy pack",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True, metavar="NAME|PATH",
                   help="a bundled pack id (ipasar, waimaotong, ipmart, inper, thisproduct) or a pack file")
    p.add_argument("events", nargs="+", type=Path, metavar="EVENTS",
                   help="JSON-lines (.jsonl) or Avro container (.avro) files")
    p.add_argument("--format", choices=["table", "jsonl"], default="table",
                   help="table for people (default), jsonl for tools")
    p.add_argument("--fail-on-violation", action="store_true",
                   help="exit 1 if any event is a violation or any record is malformed")
    p.add_argument("--trail", type=Path, metavar="DIR",
                   help="also append an audit record per event (and per rejected line) to this trail")
    p.add_argument("--keys", type=Path, metavar="DIR",
                   help="key directory for --trail (default: $AUDITOR_KEYS)")
    p.set_defaults(func=run)


class _Table:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        print(f"{'EVENT':<24} {'VERDICT':<9} {'RULE':<40} {'CLAUSE':<12} REASON", file=out)

    def decision(self, row: DecodedLine, d: Decision) -> None:
        if not d.violations:
            rule = d.permitted_by.rule_id if d.permitted_by else "-"
            clause = d.permitted_by.clause[:12] if d.permitted_by else "-"
            print(f"{d.event_id[:24]:<24} {'ALLOW':<9} {rule:<40} {clause:<12} permitted", file=self.out)
            return
        for i, v in enumerate(d.violations):
            head = f"{d.event_id[:24]:<24} {'VIOLATION':<9}" if i == 0 else " " * 34
            print(f"{head} {v.rule_id:<40} {v.rule.clause[:12]:<12} {v.reason}", file=self.out)

    def error(self, err: DecodeError) -> None:
        print(f"{'-':<24} {'MALFORMED':<9} {err.reason:<40} {'-':<12} {err}", file=self.out)


class _Jsonl:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def decision(self, row: DecodedLine, d: Decision) -> None:
        doc = decision_to_dict(d, quote=False)
        doc["source"] = f"{row.source}:{row.line}"
        self.out.write(json.dumps(doc, separators=(",", ":")) + "\n")

    def error(self, err: DecodeError) -> None:
        self.out.write(json.dumps({"error": str(err), "reason": err.reason, "source": err.source,
                                   "line": err.line}) + "\n")


def run(args: argparse.Namespace) -> int:
    pack = load_pack(args.policy)
    for path in args.events:
        if not path.is_file():
            raise ConfigError(f"no such events file: {path}")
    writer = None
    if args.trail is not None:
        from auditor.cli.offline_trail import OfflineTrail

        writer = OfflineTrail.open(args.trail, args.keys)
    out = sys.stdout
    sink = _Table(out) if args.format == "table" else _Jsonl(out)
    verdicts: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    malformed = 0
    total = sum(p.stat().st_size for p in args.events)
    # A progress bar only when a person watches stderr and the decisions go somewhere else.
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="check", leave=False,
               disable=not (sys.stderr.isatty() and not out.isatty()))
    try:
        for path in args.events:
            done = bar.n
            for row in iter_event_file(path):
                if row.raw:
                    bar.update(len(row.raw) + 1)
                if row.error is not None:
                    malformed += 1
                    sink.error(row.error)
                    if writer is not None:
                        writer.reject(row)
                    continue
                assert row.event is not None
                d = evaluate(row.event, pack)
                verdicts[d.verdict.value] += 1
                rules.update(d.violated_rule_ids)
                sink.decision(row, d)
                if writer is not None:
                    writer.record(row, d)
            bar.update(done + path.stat().st_size - bar.n)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    summary = {"pack": pack.id, "pack_hash": pack.content_hash, "events": sum(verdicts.values()),
               "verdicts": dict(verdicts), "violations_by_rule": dict(rules.most_common()),
               "malformed": malformed}
    _print_summary(summary, args.format, out)
    if args.fail_on_violation and (verdicts["VIOLATION"] or malformed):
        return 1
    return 0


def _print_summary(s: dict[str, object], fmt: str, out: TextIO) -> None:
    if fmt == "jsonl":
        print(json.dumps({"summary": s}), file=sys.stderr)
        return
    verdicts = s["verdicts"]
    assert isinstance(verdicts, dict)
    print(f"\nsummary: {s['events']} events under {s['pack']} ({str(s['pack_hash'])[:19]}): "
          f"{verdicts.get('ALLOW', 0)} ALLOW, {verdicts.get('VIOLATION', 0)} VIOLATION, "
          f"{s['malformed']} malformed", file=out)
    by_rule = s["violations_by_rule"]
    assert isinstance(by_rule, dict)
    for rule, n in by_rule.items():
        print(f"  {n:>6}  {rule}", file=out)
