"""``auditor evidence`` and ``auditor verify-evidence``: one record as an archive a regulator can
check offline, and the check."""

from __future__ import annotations

import argparse
from pathlib import Path

from auditor.cli.boundary import non_negative_int
from auditor.cli.trailio import kafka_args, key_args, open_source, verifier_of, witness_verifiers
from auditor.errors import ConfigError
from auditor.trail.keys import Verifier

_RAW = argparse.RawDescriptionHelpFormatter

EVIDENCE_HELP = """\
Write one evidence archive (zip) for one audit record: the record and every fact it stores in
readable form, its inclusion proof, the signed checkpoint with any witness cosignatures, the
policy pack file at the content hash the record names, the log's public key and fingerprint, and
a one-page summary with real timestamps. 'auditor verify-evidence' checks it with nothing else.

The pack is looked up among the bundled packs and in every --packs DIR (keep old pack versions
there); if no file has the record's content hash, nothing is written and the error says so.

examples:
  auditor evidence ./trail --event-id ev-1001 --out ev-1001.zip
  auditor evidence ./trail --chain events/3 --seq 1041 --packs /srv/policies --out rec.zip \\
                   --witness-key dpo-witness.vkey
"""

VERIFY_EVIDENCE_HELP = """\
Check an evidence archive offline: the key, the checkpoint's signature and witness cosignatures,
the record's hash and its audit path to the signed root, the readable facts, the pack's content
hash, the summary and the manifest. Names the part that fails. Pass the log's published key with
--pubkey to make sure the archive's key is that one.

examples:
  auditor verify-evidence ev-1001.zip --pubkey published-signing.pub

exit status: 0 the archive holds, 1 a part fails (named), 2 usage error.
"""


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evidence", help="write an evidence archive for one record", description=EVIDENCE_HELP,
                       formatter_class=_RAW)
    e.add_argument("trail", metavar="TRAIL", help="a trail directory, or kafka://HOST:PORT/TOPIC")
    pick = e.add_mutually_exclusive_group(required=True)
    pick.add_argument("--event-id", help="the audited event's id")
    pick.add_argument("--chain", help="with --seq: the record's chain, e.g. events/3")
    e.add_argument("--seq", type=non_negative_int, help="with --chain: the record's seq")
    e.add_argument("--packs", type=Path, action="append", default=[], metavar="DIR",
                   help="a directory of pack files (older versions); repeatable")
    e.add_argument("--witness-key", action="append", default=[], metavar="VKEY|FILE",
                   help="include and check the cosignatures of this witness; repeatable")
    e.add_argument("--out", type=Path, required=True, metavar="FILE.zip")
    key_args(e)
    kafka_args(e)
    e.set_defaults(func=run_evidence)

    v = sub.add_parser("verify-evidence", help="check an evidence archive offline", description=VERIFY_EVIDENCE_HELP,
                       formatter_class=_RAW)
    v.add_argument("archive", type=Path, metavar="ARCHIVE")
    v.add_argument("--pubkey", type=Path, metavar="FILE", help="the log's published key (PEM or vkey) to pin")
    v.set_defaults(func=run_verify_evidence)


def run_evidence(args: argparse.Namespace) -> int:
    from auditor.trail.evidence import build_evidence

    if (args.chain is None) != (args.seq is None):
        raise ConfigError("--chain and --seq go together (or use --event-id)")
    verifier = verifier_of(args)
    data = build_evidence(open_source(args.trail, args), verifier, event_id=args.event_id, chain=args.chain,
                          seq=args.seq, pack_dirs=args.packs, witnesses=witness_verifiers(args.witness_key))
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({len(data):,} bytes); check it with: auditor verify-evidence {args.out}")
    return 0


def run_verify_evidence(args: argparse.Namespace) -> int:
    from auditor.trail.evidence import SUMMARY, verify_evidence

    try:
        data = args.archive.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.archive}: {exc}") from exc
    pinned = Verifier.from_file(args.pubkey) if args.pubkey is not None else None
    findings, record = verify_evidence(data, pinned)
    for finding in findings:
        print(f"INVALID  {finding}")
    if findings:
        return 1
    import io
    import zipfile

    print(zipfile.ZipFile(io.BytesIO(data)).read(SUMMARY).decode(), end="")
    assert record is not None
    print(f"\nevidence holds: {record.chain_id} seq {record.seq}, every part checked"
          + ("" if pinned else " (pass --pubkey to pin the log's published key)"))
    return 0
