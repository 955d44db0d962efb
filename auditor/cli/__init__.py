"""The ``auditor`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``; this module only
assembles them, sets up logging, and runs the chosen command through the one error boundary
(:mod:`auditor.cli.boundary`), which turns any failure into one line that says what to fix and
an exit code from the one table (:mod:`auditor.exitcodes`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from auditor import __version__

#: Modules that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "auditor.cli.check",
    "auditor.cli.convert",
    "auditor.cli.policy",
    "auditor.cli.trail",
    "auditor.cli.stream",
)

EPILOG = """\
common workflows:
  auditor demo                                   local broker + demo stream + daemon, end to end
  auditor check events.jsonl                     audit a file offline, one verdict per event
  auditor convert events.jsonl --out e.avro      JSON lines to an Avro container file
  auditor policy lint my-pack.yaml               validate a policy pack
  auditor keys generate --out ~/.auditor/keys    make signing and pseudonymisation keys
  auditor verify TRAIL                           prove a trail untouched
  auditor replay TRAIL --subject u-123           what happened to one person's data

Run 'auditor COMMAND --help' for each command's options.

exit status: 0 success, 1 the audit found something (violations with --fail-on-violation, a
trail or proof that does not verify), 2 usage, configuration or input error, 3 broker, network
or authentication error, 4 the daemon's watchdog fired, 70 internal error (a bug), 130 Ctrl-C.
"""

#: Commands that run for long and log like a service: librdkafka's warnings are shown there.
DAEMON_COMMANDS = {"run", "demo"}

LOG_LEVELS = ("debug", "info", "warning", "error")

#: Where neither ``--log-level`` nor ``AUDITOR_LOG_LEVEL`` says: the daemon logs its lifecycle
#: (started, partitions assigned, chains restored, shutdown) at info; the other commands print
#: their own output and log warnings only.
DEFAULT_LOG_LEVEL = {"run": "info"}


def log_level_of(command: str | None, flag: str | None, environ: dict[str, str] | os._Environ[str]) -> str:
    """The log level: ``--log-level``, else ``AUDITOR_LOG_LEVEL``, else the command's default."""
    if flag is not None:
        return flag
    env = environ.get("AUDITOR_LOG_LEVEL", "").strip().lower()
    if env:
        if env not in LOG_LEVELS:
            raise ValueError(f"AUDITOR_LOG_LEVEL={env!r} is not a log level: use one of {', '.join(LOG_LEVELS)}")
        return env
    return DEFAULT_LOG_LEVEL.get(command or "", "warning")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditor",
        description="Audit every access to and disclosure of personal data against the "
                    "privacy policy that governs it, and keep a tamper-evident trail.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"auditor {__version__}")
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS,
                        help="log verbosity on stderr (default: $AUDITOR_LOG_LEVEL, else info for "
                             "'run' and warning for the other commands)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command module not present in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from auditor.cli.boundary import run_command
    from auditor.logging import configure_logging

    try:
        level = log_level_of(args.command, args.log_level, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    daemon = args.command in DAEMON_COMMANDS
    configure_logging(level, kafka_level=None if daemon or level == "debug" else "none")
    return run_command(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
