"""Trail commands: ``keys generate``, ``verify``, ``prove``, ``verify-proof``, ``replay``."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from auditor.cli.boundary import non_negative_int
from auditor.errors import ConfigError, TrailError
from auditor.trail.checkpoint import Checkpoint
from auditor.trail.keys import SIGNING_PUB, KeyRing, Verifier
from auditor.trail.segment import list_segments

_RAW = argparse.RawDescriptionHelpFormatter

KEYS_HELP = """\
Make the keys a trail needs, in a new directory (mode 0700, files 0600):
an Ed25519 pair that signs checkpoints (signing.key, signing.pub) and an HMAC key that
turns subject and actor ids into pseudonyms (pseudonym.key). Keep the directory outside
every trail directory; give verifiers only signing.pub.

examples:
  auditor keys generate --out ~/.auditor/keys
  export AUDITOR_KEYS=~/.auditor/keys
"""

VERIFY_HELP = """\
Recompute every record hash and chain link, check every checkpoint's signature and Merkle
root, and name each finding: the chain, the seq, the expected and the actual hash.
Needs only the public key. With --trusted-checkpoint (a checkpoint saved elsewhere, or a proof
file) a rollback to an older copy of the trail is detected too.

examples:
  auditor verify ./trail --pubkey signing.pub
  auditor verify ./trail --trusted-checkpoint /backup/latest-checkpoint.json
  auditor verify ./trail --format json | jq .issues

exit status: 0 intact, 1 tampering or damage found, 2 usage or configuration error.
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
and the checkpoint's signature. Prints the record's facts.

examples:
  auditor verify-proof record-1041.proof.json --pubkey signing.pub

exit status: 0 the proof holds, 1 it does not, 2 usage or configuration error.
"""

REPLAY_HELP = """\
Stream a trail for an investigation. Filters combine (AND). Subjects and actors are given raw
and pseudonymised with the trail's key (--keys or $AUDITOR_KEYS); raw ids are never stored.

examples:
  auditor replay ./trail --subject u-123                         everything done with one person's data
  auditor replay ./trail --recipient-type bank --verdict VIOLATION --format csv > bank.csv
  auditor replay ./trail --since 2024-05-01 --until 2024-06-01 --stats
  auditor replay ./trail --policy ipasar-v2.yaml --reevaluate    what-if: which verdicts change, and why
"""


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="make signing and pseudonymisation keys", description=KEYS_HELP,
                          formatter_class=_RAW)
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    gen = ksub.add_parser("generate", help="write a new key set", description=KEYS_HELP, formatter_class=_RAW)
    gen.add_argument("--out", type=Path, required=True, metavar="DIR", help="new key directory")
    gen.set_defaults(func=run_keys_generate)

    v = sub.add_parser("verify", help="prove a trail untouched", description=VERIFY_HELP,
                       formatter_class=_RAW)
    v.add_argument("trail", metavar="TRAIL",
                   help="a trail directory, or the audit topic as kafka://HOST:PORT/TOPIC (read_committed)")
    _key_args(v)
    v.add_argument("--trusted-checkpoint", type=Path, action="append", default=[], metavar="FILE",
                   help="a checkpoint kept outside the trail (JSON line or proof file); repeatable")
    v.add_argument("--format", choices=["text", "json"], default="text")
    v.add_argument("--config", type=Path, metavar="FILE",
                   help="for kafka://: the config whose kafka.properties (TLS, SASL) reach the cluster "
                        "(AUDITOR_KAFKA_PROPERTIES__* variables work too)")
    v.set_defaults(func=run_verify)

    p = sub.add_parser("prove", help="write an inclusion proof for one record", description=PROVE_HELP,
                       formatter_class=_RAW)
    p.add_argument("trail", type=Path, metavar="TRAIL")
    p.add_argument("--seq", type=non_negative_int, required=True, help="the record's seq in its chain")
    p.add_argument("--chain", help="chain id, e.g. events/3 or file:events.jsonl (needed if several)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    _key_args(p)
    p.set_defaults(func=run_prove)

    vp = sub.add_parser("verify-proof", help="check an inclusion proof without the trail",
                        description=VERIFY_PROOF_HELP, formatter_class=_RAW)
    vp.add_argument("proof", type=Path, metavar="PROOF")
    _key_args(vp)
    vp.set_defaults(func=run_verify_proof)

    r = sub.add_parser("replay", help="filter, count and re-judge audit records", description=REPLAY_HELP,
                       formatter_class=_RAW)
    r.add_argument("trail", type=Path, metavar="TRAIL")
    r.add_argument("--keys", type=Path, metavar="DIR", help="key directory (default: $AUDITOR_KEYS)")
    r.add_argument("--subject", help="raw subject id (pseudonymised on the fly)")
    r.add_argument("--actor", help="raw actor id (pseudonymised on the fly)")
    r.add_argument("--recipient-type", help="e.g. bank, law_enforcement")
    r.add_argument("--purpose")
    r.add_argument("--category", help="data category the event names")
    r.add_argument("--verdict", choices=["ALLOW", "VIOLATION"])
    r.add_argument("--rule", help="violated (or permitting) rule id")
    r.add_argument("--pack", help="pack id the record was judged under")
    r.add_argument("--chain", help="only this chain")
    r.add_argument("--since", type=_time, help="occurred at or after (ISO-8601)")
    r.add_argument("--until", type=_time, help="occurred before (ISO-8601)")
    r.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    r.add_argument("--stats", action="store_true", help="counts by recipient, purpose, verdict and rule")
    r.add_argument("--reevaluate", action="store_true", help="re-judge under --policy; report changes")
    r.add_argument("--policy", metavar="NAME|PATH", help="the pack for --reevaluate")
    r.set_defaults(func=run_replay)


def _key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pubkey", type=Path, metavar="FILE",
                   help=f"Ed25519 public key (default: {SIGNING_PUB} in the key directory)")
    p.add_argument("--keys", type=Path, metavar="DIR", help="key directory (default: $AUDITOR_KEYS)")


def _time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _verifier(args: argparse.Namespace) -> Verifier:
    if args.pubkey is not None:
        return Verifier.from_file(args.pubkey)
    return KeyRing.resolve(args.keys).verifier


@contextmanager
def _progress(total: int, desc: str) -> Iterator[Callable[[int], None]]:
    bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not sys.stderr.isatty(),
               file=sys.stderr, leave=False)
    def update(n: int) -> None:
        bar.update(n)

    try:
        yield update
    finally:
        bar.close()


def _trail_bytes(trail: Path) -> int:
    return sum(p.stat().st_size for _, p in list_segments(trail))


def run_keys_generate(args: argparse.Namespace) -> int:
    keys = KeyRing.generate(args.out)
    print(f"wrote keys to {args.out}")
    print(f"  signing key id      {keys.signer.key_id}  (give verifiers {args.out / SIGNING_PUB})")
    print(f"  pseudonym key id    {keys.pseudonymizer.key_id}")
    print(f"use them with --keys {args.out} or: export AUDITOR_KEYS={args.out}")
    return 0


def _load_trusted(path: Path) -> Checkpoint:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read trusted checkpoint {path}: {exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError:
        doc = json.loads(text.strip().splitlines()[-1])
    if isinstance(doc, dict) and "checkpoint" in doc:
        doc = doc["checkpoint"]
    try:
        return Checkpoint.from_json(json.dumps(doc))
    except TrailError as exc:
        raise ConfigError(f"{path} is not a checkpoint: {exc}") from exc


def run_verify(args: argparse.Namespace) -> int:
    from auditor.trail.verify import verify_trail

    if args.trail.startswith("kafka://"):
        report = _verify_topic(args.trail, args.config)
    else:
        args.trail = Path(args.trail)
        verifier = _verifier(args)
        trusted = [_load_trusted(p) for p in args.trusted_checkpoint]
        with _progress(_trail_bytes(args.trail), "verify") as progress:
            report = verify_trail(args.trail, verifier, trusted, progress=progress)
    if args.format == "json":
        print(json.dumps({"ok": report.ok, "records": report.records, "chains": report.chains,
                          "checkpoints": report.checkpoints, "issues": [vars(i) for i in report.issues],
                          "notes": report.notes}, indent=2))
    else:
        for issue in report.issues:
            print(f"TAMPERED  {issue}")
        for note in report.notes:
            print(f"note: {note}")
        state = "intact" if report.ok else f"NOT intact: {len(report.issues)} finding(s)"
        print(f"{args.trail}: {report.records} records in {len(report.chains)} chain(s), "
              f"{report.checkpoints} valid checkpoint(s): {state}")
    return 0 if report.ok else 1


def _verify_topic(url: str, config: Path | None = None) -> Any:
    """Verify the chains held in an audit topic: kafka://HOST:PORT[,HOST:PORT]/TOPIC."""
    from auditor.config import load_config
    from auditor.stream.topictrail import verify_topic

    rest = url.removeprefix("kafka://")
    bootstrap, _, topic = rest.partition("/")
    if not bootstrap or not topic:
        raise ConfigError(f"'{url}' is not kafka://HOST:PORT/TOPIC")
    conf = load_config(config, overrides={"kafka.bootstrap_servers": bootstrap}).client_conf()
    with tqdm(desc="verify", unit=" records", disable=not sys.stderr.isatty()) as bar:
        return verify_topic(conf, topic, progress=lambda n: bar.update(n))


def run_prove(args: argparse.Namespace) -> int:
    from auditor.trail.proof import make_proof

    verifier = _verifier(args) if (args.pubkey or args.keys) else None
    proof = make_proof(args.trail, args.seq, args.chain, verifier)
    args.out.write_text(proof.to_json() + "\n")
    print(f"wrote proof of {proof.chain_id} seq {proof.seq} under the checkpoint of size "
          f"{proof.checkpoint.size} to {args.out}")
    return 0


def run_verify_proof(args: argparse.Namespace) -> int:
    from auditor.trail.proof import InclusionProof, verify_proof
    from auditor.trail.replay import record_row

    try:
        text = args.proof.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.proof}: {exc}") from exc
    proof = InclusionProof.from_json(text)
    problems, record = verify_proof(proof, _verifier(args))
    if record is not None:
        print(json.dumps(record_row(record), indent=2))
    for problem in problems:
        print(f"INVALID  {problem}")
    if problems:
        return 1
    print(f"proof holds: {proof.chain_id} seq {proof.seq} is in the trail signed at size "
          f"{proof.checkpoint.size} by key {proof.checkpoint.key_id}")
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from auditor.trail.replay import ReplayFilter, Stats, WhatIf, iter_records, reevaluate, write_records

    pseudo: Any = None
    if args.subject is not None or args.actor is not None:
        pseudo = KeyRing.resolve(args.keys).pseudonymizer
    if args.reevaluate and not args.policy:
        raise ConfigError("--reevaluate needs --policy NAME|PATH (the pack to re-judge under)")
    flt = ReplayFilter(
        subject=pseudo(args.subject) if args.subject is not None else None,
        actor=pseudo(args.actor) if args.actor is not None else None,
        recipient_type=args.recipient_type, purpose=args.purpose, category=args.category,
        verdict=args.verdict, rule=args.rule, pack=args.pack, chain=args.chain,
        since=args.since, until=args.until)
    out = sys.stdout
    with _progress(_trail_bytes(args.trail), "replay") as progress:
        records = iter_records(args.trail, flt, progress=progress)
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
    if args.format == "table":
        print(f"{n} record(s)", file=sys.stderr)
    return 0
