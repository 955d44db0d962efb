"""``auditor convert``: JSON-lines events to an Avro object container file (what ``check`` reads)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from auditor.cli.boundary import SkipBad
from auditor.errors import ConfigError

HELP = """\
Write events as an Avro object container file under the bundled event schema: the binary form
'auditor check' reads and Avro tools (avro-tools tojson, fastavro, Spark) understand. Input is
JSON lines (or Avro container files); a malformed line is reported with its file and line,
counted and left out. The output is written to a temporary file and renamed when complete.

examples:
  auditor convert events.jsonl --out events.avro
  zcat events.jsonl.gz | auditor convert - --out events.avro --codec null
  auditor convert a.jsonl b.jsonl --out - > all.avro

exit status: 0 written (malformed lines, if any, are counted on stderr), 2 usage or unusable input.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert JSON-lines events to an Avro container file",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="EVENTS", help="JSON-lines (or Avro) files; - reads standard input")
    p.add_argument("--out", required=True, metavar="FILE", help="the Avro container file to write; - for stdout")
    p.add_argument("--codec", choices=["deflate", "null"], default="deflate", help="block compression (deflate)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from auditor.events.codec import iter_event_file
    from auditor.events.container import write_container

    if args.inputs.count("-") > 1:
        raise ConfigError("'-' (standard input) can be given once")
    for path in args.inputs:
        if path != "-" and not Path(path).is_file():
            raise ConfigError(f"no such events file: {path}")
    events = SkipBad((row for path in args.inputs for row in iter_event_file(path)), "event")
    if args.out == "-":
        n = write_container(sys.stdout.buffer, events, codec=args.codec)
        sys.stdout.buffer.flush()
    else:
        out = Path(args.out)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                n = write_container(fh, events, codec=args.codec)
            os.replace(tmp, out)
        except BaseException:
            os.unlink(tmp)
            raise
    where = "standard output" if args.out == "-" else args.out
    print(f"wrote {n} events to {where}" + (f" ({events.bad} malformed lines skipped)" if events.bad else ""),
          file=sys.stderr)
    return 0
