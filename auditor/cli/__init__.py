"""The ``auditor`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``; this module only
assembles them, sets up logging, and maps :class:`~auditor.errors.AuditorError` to a clear
message and exit code 2 (exit 1 is reserved for "the audit found something", e.g. violations
with ``--fail-on-violation`` or a trail that does not verify).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from auditor import __version__
from auditor.errors import AuditorError

#: Modules that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "auditor.cli.check",
    "auditor.cli.policy",
    "auditor.cli.trail",
    "auditor.cli.stream",
)

EPILOG = """\
common workflows:
  auditor demo                                   local broker + demo stream + daemon, end to end
  auditor check --policy ipasar events.jsonl     audit a file offline, one verdict per event
  auditor policy lint my-pack.yaml               validate a policy pack
  auditor keys generate --out ~/.auditor/keys    make signing and pseudonymisation keys
  auditor verify TRAIL                           prove a trail untouched
  auditor replay TRAIL --subject u-123           what happened to one person's data

Run 'auditor COMMAND --help' for each command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditor",
        description="Audit every access to and disclosure of personal data against the "
                    "privacy policy that governs it, and keep a tamper-evident trail.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"auditor {__version__}")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="log verbosity on stderr (default: warning)")
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
    from auditor.logging import configure_logging

    configure_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except AuditorError as exc:
        print(f"auditor: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        sys.stderr.close()  # output piped into head & co.: not an error
        return 0
    except KeyboardInterrupt:
        print("auditor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
