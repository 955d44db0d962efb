"""Command line for the local Kafka broker.

python -m auditor.localkafka fetch [--cache-dir DIR]
    Fetch the Kafka jars with Maven (once) and print the lib directory.

python -m auditor.localkafka run [--cache-dir DIR] [--port N] [--host H] [--heap 512m]
                                 [--keep-work-dir] [--set key=value ...]
    Start a single-node KRaft broker, print its bootstrap servers (host:port)
    as the only line on stdout, and keep it up until Ctrl-C or SIGTERM; then
    stop it cleanly.  Status messages go to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from auditor.localkafka.broker import KAFKA_VERSION, LocalKafka, LocalKafkaError, ensure_jars


def _status(message: str) -> None:
    print(f"[localkafka] {message}", file=sys.stderr, flush=True)


def _parse_set(values: Sequence[str]) -> dict[str, str]:
    props: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        props[key.strip()] = value.strip()
    return props


def _cmd_fetch(args: argparse.Namespace) -> int:
    lib = ensure_jars(args.cache_dir, _status)
    print(lib, flush=True)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        _status(f"got {signal.Signals(signum).name}, stopping")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    kafka = LocalKafka(
        cache_dir=args.cache_dir,
        host=args.host,
        broker_port=args.port,
        heap=args.heap,
        properties=_parse_set(args.set),
        keep_work_dir=args.keep_work_dir,
        progress=_status,
    )
    try:
        kafka.start()
        print(kafka.bootstrap_servers, flush=True)
        _status(
            f"Kafka {KAFKA_VERSION} up at {kafka.bootstrap_servers} (pid {kafka.pid}); "
            "Ctrl-C or SIGTERM stops it"
        )
        while not stop.wait(0.5):
            if not kafka.is_running():
                _status(f"broker exited unexpectedly\n{kafka.error_report()}")
                return 1
        return 0
    finally:
        kafka.stop()
        if args.keep_work_dir and kafka.work_dir:
            _status(f"work dir kept: {kafka.work_dir}")
        _status("stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m auditor.localkafka``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m auditor.localkafka",
        description=f"Local single-node Apache Kafka {KAFKA_VERSION} (KRaft) from Maven jars.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="jar cache (default $AUDITOR_CACHE/kafka-<version> or ~/.cache/auditor/kafka-<version>)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("fetch", parents=[common], help="fetch the jars with Maven and print the lib directory")

    run = sub.add_parser("run", parents=[common], help="run a broker until Ctrl-C / SIGTERM")
    run.add_argument("--host", default="127.0.0.1", help="listen/advertise address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: a free one)")
    run.add_argument("--heap", default="512m", help="JVM -Xmx (default 512m)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra server.properties entry (repeatable)",
    )
    run.add_argument(
        "--keep-work-dir", action="store_true", help="keep the temporary data/log directory after stopping"
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            return _cmd_fetch(args)
        return _cmd_run(args)
    except LocalKafkaError as exc:
        _status(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
