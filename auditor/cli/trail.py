"""Trail commands: ``keys generate``, ``verify``, ``prove``, ``verify-proof``, ``replay``.

``auditor evidence`` / ``verify-evidence`` (:mod:`auditor.cli.evidence`) and ``auditor witness``
(:mod:`auditor.cli.witness`) are registered from here too. Every command that reads a trail takes
a directory or ``kafka://HOST:PORT/TOPIC`` (:mod:`auditor.cli.trailio`).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditor.cli.boundary import non_negative_int
from auditor.cli.trailio import (
    kafka_args,
    key_args,
    load_trusted,
    open_source,
    optional_verifier,
    parse_duration,
    progress_bar,
    verifier_of,
    witness_verifiers,
)
from auditor.errors import ConfigError
from auditor.trail.keys import SIGNING_PUB, SIGNING_VKEY, KeyRing, fingerprint

_RAW = argparse.RawDescriptionHelpFormatter

KEYS_HELP = """\
Make the keys a trail needs, in a new directory (mode 0700, files 0600):
an Ed25519 pair that signs checkpoints (signing.key, signing.pub, signing.vkey) and an HMAC key
that turns subject and actor ids into pseudonyms (pseudonym.key). Keep the directory outside
every trail directory; give verifiers and witnesses only signing.pub or signing.vkey.

--name is the key's name in the signed checkpoints (C2SP signed notes); every checkpoint origin
starts with it (<name>/<chain id>). Keep the same name when you rotate the key.

examples:
  auditor keys generate --out ~/.auditor/keys --name example.com/auditor
  export AUDITOR_KEYS=~/.auditor/keys
"""

VERIFY_HELP = """\
Recompute every record hash and chain link, check every checkpoint's signature (C2SP signed
note), Merkle root and stored consistency proof, and name each finding: the chain, the seq,
the expected and the actual hash. Needs only the public key.

A trail passes only when signed checkpoints vouch for it: records with no valid checkpoint at
all, or older than --max-unsigned-age without one, fail (checkpoints removed, signing stopped).

--trusted-checkpoint (a checkpoint kept elsewhere: a saved note, a checkpoints.jsonl copy, a
proof or a witness's state) is checked with RFC 9162 consistency proofs: the trail's latest
checkpoint must extend it. A rollback or a fork is named, with the first diverging size.
With --checkpoints-only no record is read at all.

examples:
  auditor verify ./trail --pubkey signing.pub
  auditor verify ./trail --trusted-checkpoint /backup/checkpoint.note --checkpoints-only
  auditor verify ./trail --witness-key witness.vkey --min-witnesses 1
  auditor verify kafka://broker:9092/auditor.audit --config /etc/auditor/auditor.yaml
  auditor verify ./trail --format json | jq .issues

exit status: 0 intact, 1 tampering, damage or missing signatures found, 2 usage or configuration
error, 3 the broker could not be reached.
"""

PROVE_HELP = """\
Write a small JSON proof that one record is in the trail: the record, its Merkle audit path
and the signed checkpoint it sits under. Anyone with the public key can check it with
'auditor verify-proof', without the rest of the trail.

examples:
  auditor prove ./trail --seq 1041 --chain events/3 --out record-1041.proof.json
"""

VERIFY_PROOF_HELP = """\
Check a proof written by 'auditor prove': the record's hash, its audit path to the Merkle root,
and the checkpoint's signature. Prints every fact the record stores (as JSON with the keys of
schemas/audit_record.avsc).

examples:
  auditor verify-proof record-1041.proof.json --pubkey signing.pub

exit status: 0 the proof holds, 1 it does not, 2 usage or configuration error.
"""

REPLAY_HELP = """\
Stream a trail for an investigation. Filters combine (AND). Subjects and actors are given raw
and pseudonymised with the trail's key (--keys or $AUDITOR_KEYS); raw ids are never stored.

Output: --format table (every stored fact, grouped into cells; ids and hashes never cut),
jsonl (one object per record with exactly the keys of schemas/audit_record.avsc, hashes in hex)
or csv (one column per schema field, e.g. facts.subject_pseudonym).

--report writes everything the trail holds about one --subject, for an answer to an access
request: what was accessed, used and disclosed, to whom, for what, under which rule.

examples:
  auditor replay ./trail --subject u-123                         everything done with one person's data
  auditor replay ./trail --subject u-123 --report --out u-123.md  the same, as an access-request report
  auditor replay ./trail --recipient-type bank --verdict VIOLATION --format csv > bank.csv
  auditor replay ./trail --event-id ev-1001 --format jsonl        every stored fact of one event's record
  auditor replay ./trail --verdict REJECTED                        inputs that could not be judged
  auditor replay ./trail --since 2024-05-01 --until 2024-06-01 --stats
  auditor replay ./trail --policy ipasar-v2.yaml --reevaluate    what-if: which verdicts change, and why
"""


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="make signing and pseudonymisation keys", description=KEYS_HELP,
                          formatter_class=_RAW)
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    gen = ksub.add_parser("generate", help="write a new key set", description=KEYS_HELP, formatter_class=_RAW)
    gen.add_argument("--out", type=Path, required=True, metavar="DIR", help="new key directory")
    gen.add_argument("--name", help="the signing key's name in checkpoints (default auditor/<key id>)")
    gen.set_defaults(func=run_keys_generate)

    v = sub.add_parser("verify", help="prove a trail untouched", description=VERIFY_HELP,
                       formatter_class=_RAW)
    v.add_argument("trail", metavar="TRAIL", help="a trail directory, or kafka://HOST:PORT/TOPIC (the audit topic)")
    key_args(v)
    v.add_argument("--trusted-checkpoint", type=Path, action="append", default=[], metavar="FILE",
                   help="a checkpoint kept outside the trail (note, JSON line, proof or evidence); repeatable")
    v.add_argument("--checkpoints-only", action="store_true",
                   help="check signatures, stored proofs and trusted checkpoints without reading records")
    v.add_argument("--max-unsigned-age", type=parse_duration, metavar="DURATION",
                   help="records older than this must be under a valid signed checkpoint (default 15m for a "
                        "directory; 0 for kafka://, where each transaction carries its checkpoint)")
    v.add_argument("--witness-key", action="append", default=[], metavar="VKEY|FILE",
                   help="a witness's public key (vkey, or a file of vkeys); repeatable")
    v.add_argument("--min-witnesses", type=int, default=0, metavar="N",
                   help="require checkpoints cosigned by N of the --witness-key witnesses")
    v.add_argument("--format", choices=["text", "json"], default="text")
    kafka_args(v)
    v.set_defaults(func=run_verify)

    p = sub.add_parser("prove", help="write an inclusion proof for one record", description=PROVE_HELP,
                       formatter_class=_RAW)
    p.add_argument("trail", metavar="TRAIL")
    p.add_argument("--seq", type=non_negative_int, required=True, help="the record's seq in its chain")
    p.add_argument("--chain", help="chain id, e.g. events/3 or file:events.jsonl (needed if several)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    key_args(p)
    kafka_args(p)
    p.set_defaults(func=run_prove)

    vp = sub.add_parser("verify-proof", help="check an inclusion proof without the trail",
                        description=VERIFY_PROOF_HELP, formatter_class=_RAW)
    vp.add_argument("proof", type=Path, metavar="PROOF")
    key_args(vp)
    vp.set_defaults(func=run_verify_proof)

    r = sub.add_parser("replay", help="filter, count and re-judge audit records", description=REPLAY_HELP,
                       formatter_class=_RAW)
    r.add_argument("trail", metavar="TRAIL")
    r.add_argument("--keys", type=Path, metavar="DIR", help="key directory (default: $AUDITOR_KEYS)")
    r.add_argument("--subject", help="raw subject id (pseudonymised on the fly)")
    r.add_argument("--actor", help="raw actor id (pseudonymised on the fly)")
    r.add_argument("--recipient-type", help="e.g. bank, law_enforcement")
    r.add_argument("--purpose")
    r.add_argument("--category", help="data category the event names")
    r.add_argument("--verdict", choices=["ALLOW", "VIOLATION", "REJECTED"],
                   help="REJECTED: inputs that could not be judged (malformed, unknown policy)")
    r.add_argument("--event-id", metavar="ID", help="the record(s) of one event")
    r.add_argument("--rule", help="violated (or permitting) rule id")
    r.add_argument("--pack", help="pack id the record was judged under")
    r.add_argument("--chain", help="only this chain")
    r.add_argument("--since", type=_time, help="occurred at or after (ISO-8601)")
    r.add_argument("--until", type=_time, help="occurred before (ISO-8601)")
    r.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    r.add_argument("--stats", action="store_true", help="counts by recipient, purpose, verdict and rule")
    r.add_argument("--reevaluate", action="store_true", help="re-judge under --policy; report changes")
    r.add_argument("--policy", metavar="NAME|PATH", help="the pack for --reevaluate")
    r.add_argument("--report", action="store_true", help="with --subject: an access-request report (Markdown)")
    r.add_argument("--out", type=Path, metavar="FILE", help="write the output here instead of stdout")
    kafka_args(r)
    r.set_defaults(func=run_replay)

    from auditor.cli import evidence, witness

    evidence.register(sub)
    witness.register(sub)


def _time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def run_keys_generate(args: argparse.Namespace) -> int:
    keys = KeyRing.generate(args.out, args.name)
    signer = keys.signer
    print(f"wrote keys to {args.out}")
    print(f"  signing key name    {signer.name}  (checkpoint origins are {signer.name}/<chain id>)")
    print(f"  signing key id      {signer.key_id}  (give verifiers {args.out / SIGNING_PUB} or {SIGNING_VKEY})")
    print(f"  fingerprint         {fingerprint(signer.public_key())}")
    print(f"  pseudonym key id    {keys.pseudonymizer.key_id}")
    print(f"use them with --keys {args.out} or: export AUDITOR_KEYS={args.out}")
    return 0


# ---------------------------------------------------------------- verify

def run_verify(args: argparse.Namespace) -> int:
    from auditor.trail.anchor import chain_leaves, check_extends, findings, proof_from_leaves
    from auditor.trail.verify import Policy, VerifyReport, load_checkpoints, verify_source

    if str(args.trail).startswith("kafka://"):  # the cluster first: an unreachable one is exit 3
        source = open_source(args.trail, args)
        source.probe()  # type: ignore[attr-defined]
        verifier = verifier_of(args)
    else:
        verifier = verifier_of(args)  # keys first: a missing key directory says how to make one
        source = open_source(args.trail, args)
    witnesses = witness_verifiers(args.witness_key)
    if args.min_witnesses and len(witnesses) < args.min_witnesses:
        raise ConfigError(f"--min-witnesses {args.min_witnesses} needs at least that many --witness-key")
    trusted, trusted_issues = load_trusted(args.trusted_checkpoint, verifier)
    policy = Policy(max_unsigned_age=args.max_unsigned_age, witnesses=tuple(witnesses),
                    min_witnesses=args.min_witnesses)
    if args.checkpoints_only:
        report = VerifyReport()
        load_checkpoints(source, verifier, policy, report)
        if not report.checkpoints:
            from auditor.trail.source import Issue

            report.issues.append(Issue("unsigned", "no valid signed checkpoint to check"))
        report.notes.append("records were not read (--checkpoints-only)")
    else:
        with progress_bar(source.size_hint(), "verify") as progress:
            report = verify_source(source, verifier, (), policy, progress=progress)
    results = []
    for cp in trusted:
        history = report.history.get(cp.chain_id, [])
        result = check_extends(cp, history, report.entries.get(cp.chain_id, {}))
        if result.needs_records and history and not args.checkpoints_only:
            result = proof_from_leaves(cp, history[-1], chain_leaves(open_source(args.trail, args), cp.chain_id,
                                                                     history[-1].size))
        results.append(result)
        if result.ok:
            report.notes.append(f"{cp.chain_id}: {result.how}")
    report.issues[:0] = trusted_issues + findings(results)
    _print_report(args, report)
    return 0 if report.ok else 1


def _print_report(args: argparse.Namespace, report: Any) -> None:
    if args.format == "json":
        print(json.dumps({"ok": report.ok, "records": report.records, "chains": report.chains,
                          "checkpoints": report.checkpoints, "covered": report.covered,
                          "witnessed": report.witnessed, "issues": [vars(i) for i in report.issues],
                          "notes": report.notes}, indent=2))
        return
    for issue in report.issues:
        print(f"TAMPERED  {issue}" if issue.kind not in ("unsigned", "unwitnessed") else f"UNSIGNED  {issue}")
    for note in report.notes:
        print(f"note: {note}")
    state = "intact" if report.ok else f"NOT intact: {len(report.issues)} finding(s)"
    witnessed = f", {sum(report.witnessed.values())} witnessed" if args.min_witnesses else ""
    print(f"{args.trail}: {report.records} records in {len(report.chains)} chain(s), "
          f"{report.checkpoints} valid checkpoint(s), {sum(report.covered.values())} records signed"
          f"{witnessed}: {state}")


# ---------------------------------------------------------------- prove

def run_prove(args: argparse.Namespace) -> int:
    from auditor.trail.proof import make_proof

    verifier = optional_verifier(args)
    proof = make_proof(open_source(args.trail, args), args.seq, args.chain, verifier)
    args.out.write_text(proof.to_json() + "\n")
    print(f"wrote proof of {proof.chain_id} seq {proof.seq} under the checkpoint of size "
          f"{proof.tree_size} to {args.out}")
    return 0


def run_verify_proof(args: argparse.Namespace) -> int:
    from auditor.trail.proof import InclusionProof, verify_proof
    from auditor.trail.render import record_json

    try:
        text = args.proof.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.proof}: {exc}") from exc
    proof = InclusionProof.from_json(text)
    problems, record = verify_proof(proof, verifier_of(args))
    if record is not None:
        print(json.dumps(record_json(record), indent=2, ensure_ascii=False))
    for problem in problems:
        print(f"INVALID  {problem}")
    if problems:
        return 1
    print(f"proof holds: {proof.chain_id} seq {proof.seq} is in the trail signed at size {proof.tree_size}")
    return 0


# ---------------------------------------------------------------- replay

def run_replay(args: argparse.Namespace) -> int:
    from auditor.trail.replay import ReplayFilter, Stats, WhatIf, iter_records, reevaluate, write_records

    pseudo: Any = None
    if args.subject is not None or args.actor is not None:
        pseudo = KeyRing.resolve(args.keys).pseudonymizer
    if args.reevaluate and not args.policy:
        raise ConfigError("--reevaluate needs --policy NAME|PATH (the pack to re-judge under)")
    if args.report and args.subject is None:
        raise ConfigError("--report needs --subject ID (the person the report is about)")
    flt = ReplayFilter(
        subject=pseudo(args.subject) if args.subject is not None else None,
        actor=pseudo(args.actor) if args.actor is not None else None,
        recipient_type=args.recipient_type, purpose=args.purpose, category=args.category,
        verdict=args.verdict, rule=args.rule, pack=args.pack, chain=args.chain, event_id=args.event_id,
        since=args.since, until=args.until)
    source = open_source(args.trail, args)
    out = args.out.open("w") if args.out is not None else sys.stdout
    try:
        with progress_bar(source.size_hint(), "replay") as progress:
            records = iter_records(source, flt, progress=progress)
            if args.report:
                from auditor.trail.report import subject_report

                out.write(subject_report(records, flt.subject or "", pseudo.key_id, source.label,
                                         datetime.now(UTC)))
                return 0
            if args.reevaluate:
                from auditor.policy import evaluate, load_pack

                summary = WhatIf()
                for change in reevaluate(records, load_pack(args.policy), evaluate, summary):
                    out.write(f"{change}\n")
                out.write(f"re-judged {summary.judged} event(s) under {args.policy}: {summary.changed} changed\n")
                for transition, count in summary.transitions.most_common():
                    out.write(f"  {count:>10}  {transition}\n")
                return 0
            if args.stats:
                stats = Stats()
                for r in records:
                    stats.add(r)
                out.write(stats.render())
                return 0
            n = write_records(records, out, args.format)
    finally:
        if out is not sys.stdout:
            out.close()
    if args.format == "table":
        print(f"{n} record(s)", file=sys.stderr)
    return 0
