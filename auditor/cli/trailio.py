"""What the trail commands share: opening a trail (directory or ``kafka://``), keys, trusted
checkpoints, durations and progress bars. Failures go through the CLI's one error boundary
(:mod:`auditor.cli.boundary`): a broker that cannot be reached is exit 3 with one line."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from auditor.errors import ConfigError, TrailCorruption
from auditor.trail.checkpoint import SignedCheckpoint, StoredCheckpoint, open_checkpoint
from auditor.trail.keys import SIGNING_PUB, KeyRing, Verifier
from auditor.trail.note import CosignatureVerifier, NoteVerifier, parse_vkey
from auditor.trail.source import FileSource, Issue, TrailSource

KAFKA_URL = re.compile(r"^kafka://(?P<bootstrap>[^/]+)/(?P<topic>[^/?]+)$")


def key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pubkey", type=Path, metavar="FILE",
                   help=f"the log's public key: PEM or vkey (default: {SIGNING_PUB} in the key directory)")
    p.add_argument("--keys", type=Path, metavar="DIR", help="key directory (default: $AUDITOR_KEYS)")


def kafka_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("for kafka:// trails")
    g.add_argument("--config", type=Path, metavar="FILE",
                   help="auditor.yaml whose kafka client properties (TLS, SASL) to use")
    g.add_argument("--checkpoint-topic", metavar="TOPIC",
                   help="the checkpoint topic (default: <audit topic>.checkpoints)")
    g.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="give up on the broker after this long without an answer (default 30)")


def parse_duration(text: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 1d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return timedelta(seconds=float(m.group(1)) * unit)


def verifier_of(args: argparse.Namespace) -> Verifier:
    """The log keys from --pubkey, else the key directory (--keys, $AUDITOR_KEYS)."""
    if getattr(args, "pubkey", None) is not None:
        return Verifier.from_file(args.pubkey)
    return KeyRing.resolve(getattr(args, "keys", None)).verifier


def optional_verifier(args: argparse.Namespace) -> Verifier | None:
    if getattr(args, "pubkey", None) is None and not (getattr(args, "keys", None) or os.environ.get("AUDITOR_KEYS")):
        return None
    return verifier_of(args)


def witness_verifiers(specs: list[str]) -> list[NoteVerifier]:
    """Witness keys from vkeys or files of vkeys (one per line); plain Ed25519 vkeys are taken as
    the cosignature key of the same Ed25519 key, as transparency-dev does."""
    out: list[NoteVerifier] = []
    for spec in specs:
        lines = [spec]
        if "+" not in spec or Path(spec).exists():
            try:
                lines = [ln for ln in Path(spec).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            except OSError as exc:
                raise ConfigError(f"--witness-key {spec}: neither a vkey nor a readable file ({exc})") from exc
        for line in lines:
            try:
                v = parse_vkey(line)
            except ValueError as exc:
                raise ConfigError(f"--witness-key: {exc}") from exc
            out.append(v if isinstance(v, CosignatureVerifier) else CosignatureVerifier(v.name, v.public))
    return out


@contextmanager
def progress_bar(total: int, desc: str) -> Iterator[Callable[[int], None]]:
    bar = tqdm(total=total or None, desc=desc, unit="B", unit_scale=True, disable=not sys.stderr.isatty(),
               file=sys.stderr, leave=False)

    def update(n: int) -> None:
        bar.update(n)

    try:
        yield update
    finally:
        bar.close()


def open_source(spec: str | Path, args: argparse.Namespace | None = None) -> TrailSource:
    """A trail directory, or the audit (and checkpoint) topics of ``kafka://HOST:PORT/TOPIC``."""
    text = str(spec)
    if not text.startswith("kafka://"):
        path = Path(text)
        if not path.is_dir():
            raise ConfigError(f"{path} is not a trail directory (nor kafka://HOST:PORT/TOPIC)")
        return FileSource(path)
    m = KAFKA_URL.match(text)
    if not m:
        raise ConfigError(f"'{text}' is not kafka://HOST:PORT[,HOST:PORT]/TOPIC")
    from auditor.stream.topictrail import KafkaSource

    conf = kafka_conf(getattr(args, "config", None) if args is not None else None, m.group("bootstrap"))
    topic = m.group("topic")
    cp_topic = (getattr(args, "checkpoint_topic", None) if args is not None else None) or f"{topic}.checkpoints"
    timeout = getattr(args, "timeout", None) or 30.0
    return KafkaSource(conf, topic, cp_topic, timeout=timeout)


def kafka_conf(config_path: Path | None, bootstrap: str) -> dict[str, Any]:
    """Client properties of the config file (TLS, SASL) and its AUDITOR_KAFKA_PROPERTIES__*
    variables, for the cluster the URL names."""
    from auditor.config import load_config

    return dict(load_config(config_path, overrides={"kafka.bootstrap_servers": bootstrap}).client_conf())


# ---------------------------------------------------------------- trusted checkpoints

def read_notes(path: Path) -> list[bytes]:
    """Checkpoint notes from a file: a signed note, JSON lines of stored checkpoints, a proof
    or evidence manifest (anything JSON with a "checkpoint" note)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read trusted checkpoint {path}: {exc}") from exc
    notes: list[bytes] = []
    stripped = text.lstrip()
    if stripped.startswith("{"):
        for n, line in enumerate(text.splitlines() if "\n{" in text.strip() else [text], start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path}:{n}: not JSON ({exc})") from exc
            if isinstance(doc, dict) and isinstance(doc.get("checkpoint"), str):
                notes.append(doc["checkpoint"].encode())
            else:
                try:
                    notes.append(StoredCheckpoint.from_json(line).note)
                except TrailCorruption as exc:
                    raise ConfigError(f"{path}:{n}: {exc}") from exc
        return notes
    return [text.encode()]


def load_trusted(paths: list[Path], verifier: Verifier | None) -> tuple[list[SignedCheckpoint], list[Issue]]:
    trusted, issues = [], []
    for path in paths:
        for note in read_notes(path):
            try:
                trusted.append(open_checkpoint(note, verifier or Verifier()))
            except TrailCorruption as exc:
                issues.append(Issue("signature", f"trusted checkpoint {path}: {exc}"))
    return trusted, issues
