"""The peer of bench/stream.py: Quix Streams doing a *simpler* job than the auditor, on the same
topic, in the same run.

bench/stream.py runs this file with the python of its own virtual environment (Quix Streams pins
its own confluent-kafka, so it cannot share the project's). It imports nothing from auditor.

The job, per message, exactly-once (Quix's ``processing_guarantee="exactly-once"``): strip the Avro
single-object header, decode the body with plain fastavro (no checks), one dict lookup (is the
event's (policy, kind, purpose) on a small allow-list), and produce a small JSON verdict
(event id + verdict) to an output topic. Malformed messages produce a REJECTED verdict.

    python bench/quix_peer.py --bootstrap H:P --topic T --out T-quix --events M --schema schemas/privacy_event.avsc

Prints ``first`` on a line of its own when the first message arrives (bench/stream.py reads the
broker's CPU then), and at the end one JSON line: events, steady_eps (from the first message),
wall_eps (from process start, including the group join), malformed, cpu_s (CPU seconds of this
process, every thread, from the first message to the end).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import uuid
from typing import Any

import fastavro
import fastavro.schema
from quixstreams import Application

HEADER = 10  # C3 01 + the 8-byte schema fingerprint of the Avro single-object encoding

#: the one lookup: purposes each policy allows for USE (a stand-in for a policy: it reads 3 fields)
ALLOWED = {
    (policy, kind, purpose)
    for policy in ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct")
    for kind in ("ACCESS", "USE", "DISCLOSURE")
    for purpose in ("service_provision", "order_fulfilment", "customer_service", "security", "legal_compliance")
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--schema", required=True)
    args = ap.parse_args()
    started = time.perf_counter()
    schema = fastavro.parse_schema(fastavro.schema.load_schema(args.schema))
    state: dict[str, Any] = {"first": None, "bad": 0, "cpu0": 0.0}

    def judge(value: bytes) -> dict[str, str]:
        if state["first"] is None:
            state["first"], state["cpu0"] = time.perf_counter(), time.process_time()
            print("first", flush=True)
        try:
            ev = fastavro.schemaless_reader(io.BytesIO(value[HEADER:]), schema, None)
        except Exception:  # noqa: BLE001 - any malformed input is a REJECTED verdict, as in the auditor
            state["bad"] += 1
            return {"event_id": "", "verdict": "REJECTED"}
        ok = (ev["policy_id"], ev["kind"], ev["purpose"]) in ALLOWED
        return {"event_id": ev["event_id"], "verdict": "ALLOW" if ok else "VIOLATION"}

    app = Application(broker_address=args.bootstrap, consumer_group=f"bench-quix-{uuid.uuid4().hex[:6]}",
                      auto_offset_reset="earliest", processing_guarantee="exactly-once", loglevel="WARNING")
    source = app.topic(args.topic, value_deserializer="bytes")
    sink = app.topic(args.out, value_serializer="json")
    sdf = app.dataframe(source).apply(judge).to_topic(sink)
    app.run(sdf, count=args.events, collect=False)
    end, cpu = time.perf_counter(), time.process_time()
    first = state["first"] or end
    print(json.dumps({"events": args.events, "steady_eps": args.events / (end - first),
                      "wall_eps": args.events / (end - started), "malformed": state["bad"],
                      "cpu_s": cpu - state["cpu0"]}), flush=True)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
