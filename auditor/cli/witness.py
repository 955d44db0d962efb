"""``auditor witness keygen | serve | push``: run a witness, and send a trail's checkpoints to one."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from auditor.cli.trailio import key_args, open_source, verifier_of, witness_verifiers
from auditor.errors import ConfigError

_RAW = argparse.RawDescriptionHelpFormatter

HELP = """\
A witness (C2SP tlog-witness) cosigns a checkpoint only if a consistency proof shows it extends
the last one it cosigned for the same origin, and it remembers that checkpoint. Run it under
another party's control (the DPO, an external auditor): then an operator holding the signing key
can no longer re-sign a rewritten history unnoticed, because the witness never saw it.

examples:
  auditor witness keygen --out /var/lib/witness/key --name dpo.example.com/witness
  auditor witness serve --key /var/lib/witness/key --log-key signing.vkey \\
                        --state /var/lib/witness/state.json --listen 0.0.0.0:7380
  auditor witness push ./trail --witness http://dpo.example.com:7380 --witness-key witness.vkey
  auditor verify ./trail --witness-key witness.vkey --min-witnesses 1
"""


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("witness", help="run a witness, or send checkpoints to one", description=HELP,
                       formatter_class=_RAW)
    wsub = w.add_subparsers(dest="witness_command", metavar="ACTION")

    k = wsub.add_parser("keygen", help="make the witness's key", description=HELP, formatter_class=_RAW)
    k.add_argument("--out", type=Path, required=True, metavar="DIR")
    k.add_argument("--name", required=True, help="the witness's name in cosignatures, e.g. dpo.example.com/witness")
    k.set_defaults(func=run_keygen)

    s = wsub.add_parser("serve", help="serve add-checkpoint over HTTP", description=HELP, formatter_class=_RAW)
    s.add_argument("--key", type=Path, required=True, metavar="DIR", help="the witness key directory")
    s.add_argument("--log-key", action="append", required=True, metavar="VKEY|FILE",
                   help="a log's signing key (its signing.vkey or signing.pub); repeatable")
    s.add_argument("--origin-prefix", action="append", default=[], metavar="PREFIX",
                   help="origins accepted for the matching --log-key (default: '<log key name>/')")
    s.add_argument("--state", type=Path, required=True, metavar="FILE", help="where cosigned checkpoints are kept")
    s.add_argument("--listen", default="127.0.0.1:7380", metavar="HOST:PORT")
    s.add_argument("--prefix", default="", help="URL path prefix of add-checkpoint (default: none)")
    s.set_defaults(func=run_serve)

    p = wsub.add_parser("push", help="send a trail's latest checkpoints to a witness", description=HELP,
                        formatter_class=_RAW)
    p.add_argument("trail", metavar="TRAIL", help="a trail directory")
    p.add_argument("--witness", required=True, metavar="URL", help="the witness's submission prefix")
    p.add_argument("--witness-key", required=True, metavar="VKEY|FILE", help="the witness's public key")
    key_args(p)
    p.set_defaults(func=run_push)


def run_keygen(args: argparse.Namespace) -> int:
    from auditor.witness.keys import VKEY, generate

    signer = generate(args.out, args.name)
    print(f"wrote the witness key to {args.out}")
    print(f"  name     {signer.name}")
    print(f"  vkey     {signer.verifier.vkey()}   (in {args.out / VKEY}; give it to verifiers)")
    return 0


def _log_keys(specs: list[str], prefixes: list[str]) -> list[Any]:
    from auditor.trail.keys import Verifier
    from auditor.witness.core import TrustedLog

    if prefixes and len(prefixes) != len(specs):
        raise ConfigError("give one --origin-prefix per --log-key, or none")
    logs = []
    for i, spec in enumerate(specs):
        path = Path(spec)
        if path.exists():
            keys = Verifier.from_file(path).notes
        else:
            from auditor.trail.note import Ed25519Verifier, parse_vkey

            try:
                key = parse_vkey(spec)
            except ValueError as exc:
                raise ConfigError(f"--log-key {spec[:40]}: {exc}") from exc
            if not isinstance(key, Ed25519Verifier):
                raise ConfigError("--log-key must be a log signing key (vkey type 0x01)")
            keys = (key,)
        for key in keys:
            logs.append(TrustedLog(key, prefixes[i] if prefixes else key.name + "/"))
    return logs


def run_serve(args: argparse.Namespace) -> int:
    from auditor.logging import get_logger
    from auditor.witness import keys as witness_keys
    from auditor.witness.core import Witness
    from auditor.witness.server import make_server, serve_in_thread
    from auditor.witness.state import WitnessState

    signer = witness_keys.load(args.key)
    logs = _log_keys(args.log_key, args.origin_prefix)
    state = WitnessState(args.state)
    state.load()  # fail now if it is unreadable
    log = get_logger("auditor.witness")
    witness = Witness(signer, logs, state,
                      on_refusal=lambda origin, status, why: log.warning("refused", status=status, reason=why))
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--listen {args.listen}: expected HOST:PORT")
    server = make_server(witness, host, int(port), args.prefix)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve_in_thread(server)
    print(f"witness {signer.name} listening on {host}:{server.server_address[1]}{args.prefix}/add-checkpoint "
          f"for {len(logs)} log key(s); vkey {signer.verifier.vkey()}", file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0


def run_push(args: argparse.Namespace) -> int:
    from auditor.trail.anchor import chain_leaves
    from auditor.trail.merkle import consistency_proof, list_nodes
    from auditor.trail.store import COSIGNATURES
    from auditor.trail.verify import Policy, VerifyReport, load_checkpoints
    from auditor.witness.client import WitnessClient, WitnessError

    verifier = verifier_of(args)
    (witness_key,) = witness_verifiers([args.witness_key])[:1]
    source = open_source(args.trail, args)
    report = VerifyReport()
    load_checkpoints(source, verifier, Policy(), report)
    if not report.history:
        raise ConfigError(f"{args.trail} has no valid signed checkpoint to send")
    client = WitnessClient(args.witness, witness_key)  # type: ignore[arg-type]
    failures = 0
    with (Path(args.trail) / COSIGNATURES).open("a") as out:
        for chain, history in sorted(report.history.items()):
            latest = history[-1]
            leaves: list[bytes] = []

            def proof_from(old: int, chain: str = chain, size: int = latest.size, leaves: list = leaves) -> list:
                if not leaves:
                    leaves.extend(chain_leaves(open_source(args.trail, args), chain, size))
                return consistency_proof(old, size, list_nodes(leaves[:size]))

            try:
                sigs = client.cosign(latest.note.to_bytes(), latest.checkpoint.origin, latest.size, proof_from)
            except WitnessError as exc:
                print(f"REFUSED   {chain} size {latest.size}: {exc}")
                failures += 1
                continue
            cosigned = latest.note.with_signatures(sigs)
            out.write(json.dumps({"note": cosigned.to_bytes().decode()}) + "\n")
            out.flush()
            print(f"cosigned  {chain} size {latest.size} by {witness_key.name}")
    return 1 if failures else 0
