"""Make blocking_events.bin: example events encoded by Apache Avro Java's BlockingBinaryEncoder.

    python tests/data/native/make_blocking_fixture.py      # needs Java 17 and Maven

1. events.jsonl gets the example events (tests/data/events/*.jsonl) plus a few made here with
   long category lists and many attributes in unsorted order, so arrays and maps span several
   blocks (the re-encoder's block buffer is the smallest Java allows);
2. each event is written as a plain Avro body (fastavro) under writer.avsc, a copy of today's
   privacy_event.avsc kept with the fixture so it stays readable after the schema evolves;
3. java/BlockingFixture.java (compiled against org.apache.avro:avro from Maven Central, see
   java/pom.xml) reads each body and writes it again with BlockingBinaryEncoder;
4. blocking_events.bin holds the results, each a 4-byte big-endian length and the body.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import fastavro

from auditor.events.codec import event_to_mapping, iter_json_lines, schema_path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def extra_events() -> list[dict]:
    base = {"occurred_at": "2026-02-01T08:00:00+00:00", "policy_id": "ipmart", "source_system": "lake",
            "actor": {"type": "SERVICE", "id": "svc-etl", "role": "analytics"},
            "subject": {"id": "u-77", "age": 29, "region": "MY"}, "purpose": "analytics", "kind": "USE"}
    out = []
    for n in (3, 12, 40):
        out.append({**base, "event_id": f"blocking-{n}",
                    "data_categories": [f"category_{i:02d}" for i in range(n)],
                    "attributes": {f"key-{(i * 7) % n:02d}": f"value {i} " + "x" * (i % 5)
                                   for i in reversed(range(n))}})
    out.append({**base, "event_id": "blocking-unicode", "data_categories": ["contact"],
                "attributes": {"zeta": "ω", "alpha": "a", "Émile": "é", "日本": "語", "": "empty key"}})
    return out


def main() -> None:
    lines: list[str] = []
    for f in sorted((ROOT / "tests/data/events").glob("*.jsonl")):
        if f.name != "malformed.jsonl":
            lines += [raw.strip() for raw in f.read_text().splitlines() if raw.strip() and not raw.startswith("#")]
    lines += [json.dumps(e, ensure_ascii=False) for e in extra_events()]
    (HERE / "events.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(schema_path("privacy_event.avsc"), HERE / "writer.avsc")
    schema = fastavro.parse_schema(json.loads((HERE / "writer.avsc").read_text()))
    events = [d.event for d in iter_json_lines(HERE / "events.jsonl")]
    assert all(e is not None for e in events)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.bin"
        with plain.open("wb") as out:
            for e in events:
                buf = io.BytesIO()
                fastavro.schemaless_writer(buf, schema, event_to_mapping(e))  # type: ignore[arg-type]
                out.write(struct.pack(">I", len(buf.getvalue())) + buf.getvalue())
        cp = Path(tmp) / "cp.txt"
        subprocess.run(["mvn", "-q", "-B", "-f", str(HERE / "java/pom.xml"), "dependency:build-classpath",
                        f"-Dmdep.outputFile={cp}"], check=True)
        classpath = cp.read_text().strip()
        subprocess.run(["javac", "-d", tmp, "-cp", classpath, str(HERE / "java/BlockingFixture.java")], check=True)
        subprocess.run(["java", "-cp", f"{classpath}:{tmp}", "BlockingFixture", str(HERE / "writer.avsc"),
                        str(plain), str(HERE / "blocking_events.bin")], check=True)


if __name__ == "__main__":
    main()
