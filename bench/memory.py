"""Benchmark memory: RSS while auditing many unique large valid events.

Every event is unique and about ``--size`` bytes on the wire (default 200,000: under the daemon's
256 KiB size gate), its bulk in a long ``actor.role`` (which some packs' reasons quote), a long
subject id and a long free attribute, each of fresh random characters, so no memo can share
them. Events cycle through the five packs' compliant and violating templates.

Two modes::

    nice python bench/memory.py                         # 100,000 events through BatchProcessor
    nice python bench/memory.py --events 20000 --size 100000
    nice python bench/memory.py --native --events 1000000 --size 1000 --batch 1000 --every 100000
    nice python bench/memory.py --daemon                # `auditor run` on a local broker (LocalKafka)
    nice python bench/memory.py --daemon --bootstrap localhost:9092 --events 5000

Offline, the events go through :class:`BatchProcessor` in batches of ``--batch`` (decode,
evaluate, build, seal, route, heads committed after each batch, outputs dropped), in this
process. With ``--daemon`` they are produced to a fresh topic and audited by ``auditor run`` in
a subprocess, whose RSS is read from ``/proc/<pid>/status`` while its ``/metrics`` count the
audited events (the topics keep the bytes on disk: about ``events x size`` of it).

RSS is sampled every ``--every`` events. The result is the RSS after the first 1,000 events, the
peak and the last sample, and their ratio to the first: it passes (exit 0) when the peak stays
within 2x of the RSS after the first 1,000.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.events.model import Event  # noqa: E402
from auditor.policy import load_pack  # noqa: E402
from auditor.stream.generate import templates  # noqa: E402
from auditor.stream.produce import encode  # noqa: E402

PACK_IDS = ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct")
BASELINE = 1_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | None = None) -> int:
    if pid is None:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bases() -> list[Event]:
    out: list[Event] = []
    for pack_id in PACK_IDS:
        t = templates(load_pack(pack_id))
        out += list(t.compliant) + [e for _, e in t.violating]
    return out


def big_events(n: int, size: int, seed: int = 7) -> Iterator[Event]:
    """n unique events of about ``size`` wire bytes each."""
    rng = random.Random(seed)
    templates_ = bases()
    role_n, subject_n = size // 2, size // 10
    note_n = size - role_n - subject_n - 600
    for i in range(n):
        base = templates_[i % len(templates_)]
        role = rng.randbytes(role_n // 2).hex()
        subject = f"s{i}-" + rng.randbytes(subject_n // 2).hex()
        note = rng.randbytes(note_n // 2).hex()
        yield dataclasses.replace(
            base, event_id=f"mem-{i}", actor=dataclasses.replace(base.actor, role=role),
            subject=dataclasses.replace(base.subject, id=subject), attributes={**base.attributes, "note": note})


class Samples:
    def __init__(self) -> None:
        self.first: int | None = None
        self.peak = 0
        self.last = 0
        self.series: list[tuple[int, int]] = []

    def add(self, done: int, rss: int) -> None:
        self.series.append((done, rss))
        if done >= BASELINE and self.first is None:
            self.first = rss
        if self.first is not None:
            self.peak = max(self.peak, rss)
        self.last = rss

    def report(self, mode: str, events: int, size: int, seconds: float) -> dict[str, object]:
        first = self.first or self.last
        return {"mode": mode, "events": events, "size_bytes": size, "seconds": round(seconds, 1),
                "rss_after_1000_mb": round(first / 2**20, 1), "rss_peak_mb": round(self.peak / 2**20, 1),
                "rss_last_mb": round(self.last / 2**20, 1), "peak_ratio": round(self.peak / first, 2),
                "within_2x": self.peak <= 2 * first}


def offline(args: argparse.Namespace) -> dict[str, object]:
    from auditor.events.wire import EventDecoder
    from auditor.native import NativeEventDecoder
    from auditor.stream.processor import BatchProcessor, Routing
    from auditor.trail.keys import Pseudonymizer

    packs = {p.id: p for p in (load_pack(n) for n in PACK_IDS)}
    decoder = NativeEventDecoder() if args.native else EventDecoder()
    processor = BatchProcessor(decoder, packs, Pseudonymizer(b"m" * 32),
                               Routing("audit", "violations", "dead-letter", 16), "bench-memory")

    @dataclasses.dataclass(frozen=True)
    class Msg:
        _offset: int
        _value: bytes

        def topic(self) -> str:
            return "events"

        def partition(self) -> int:
            return self._offset % 16

        def offset(self) -> int:
            return self._offset

        def value(self) -> bytes:
            return self._value

        def key(self) -> None:
            return None

        def headers(self) -> None:
            return None

    samples = Samples()
    t0 = time.perf_counter()
    done = rejected = 0
    batch: list[Msg] = []
    for event in big_events(args.events, args.size):
        batch.append(Msg(done + len(batch), encode(event)))
        if len(batch) == args.batch:
            result = processor.process(batch)
            processor.commit_heads()
            rejected += len(result.dead_letters)
            done += len(batch)
            batch = []
            del result
            if done % args.every == 0 or done == BASELINE:
                samples.add(done, rss_bytes())
                if args.verbose:
                    print(f"{done:>8} events  rss {rss_bytes() / 2**20:8.1f} MB", file=sys.stderr, flush=True)
    if batch:
        processor.process(batch)
        done += len(batch)
    samples.add(done, rss_bytes())
    out = samples.report("offline", done, args.size, time.perf_counter() - t0)
    out["dead_letters"] = rejected
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _audited(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310
            text = resp.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("auditor_events_audited_total", "auditor_dead_letters_total")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def daemon(args: argparse.Namespace) -> dict[str, object]:
    import yaml
    from confluent_kafka import Producer

    from auditor.localkafka.broker import LocalKafka, create_topics
    from auditor.stream.topics import TRAIL_TOPIC_CONFIG, checkpoint_topic_of
    from auditor.trail.keys import KeyRing

    kafka = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        kafka = LocalKafka(progress=lambda m: print(f"[localkafka] {m}", file=sys.stderr))
        kafka.__enter__()
        bootstrap = kafka.bootstrap_servers
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    tag = uuid.uuid4().hex[:6]
    topics = {"events": [f"mem-events-{tag}"], "audit": f"mem-audit-{tag}", "violations": f"mem-violations-{tag}",
              "dead_letter": f"mem-dead-{tag}"}
    create_topics(bootstrap, [topics["events"][0], topics["violations"], topics["dead_letter"]], 3)
    # the trail topics as `auditor topics create` makes them: the daemon refuses finite retention
    create_topics(bootstrap, [topics["audit"], checkpoint_topic_of(topics["audit"])], 3, config=TRAIL_TOPIC_CONFIG)
    KeyRing.generate(work / "keys")
    port = _free_port()
    (work / "auditor.yaml").write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"mem-{tag}"}, "topics": topics,
        "keys_dir": str(work / "keys"), "http": {"port": port}, "instance_id": "bench-memory",
        "batch": {"max_events": args.batch, "max_ms": 100}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "auditor", "run", "--config", str(work / "auditor.yaml")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                         "queue.buffering.max.kbytes": 262144})
    samples = Samples()
    t0 = time.perf_counter()
    try:
        for sent, event in enumerate(big_events(args.events, args.size), 1):
            while True:
                try:
                    producer.produce(topics["events"][0], encode(event), event.subject.id[:32].encode())
                    break
                except BufferError:
                    producer.poll(0.1)
            if sent % 200 == 0:
                producer.poll(0)
                while sent - _audited(port) > 5 * args.batch:  # keep the daemon, not the topic, busy
                    if proc.poll() is not None:
                        raise SystemExit(f"the daemon exited ({proc.returncode}); see {work / 'daemon.log'}")
                    time.sleep(0.2)
                done = int(_audited(port))
                if done >= BASELINE or not samples.series:
                    samples.add(done, rss_bytes(proc.pid))
                    if args.verbose:
                        print(f"{done:>8} audited  rss {samples.last / 2**20:8.1f} MB", file=sys.stderr, flush=True)
        producer.flush(120)
        deadline = time.monotonic() + 600
        while _audited(port) < args.events and time.monotonic() < deadline:
            time.sleep(0.5)
        samples.add(int(_audited(port)), rss_bytes(proc.pid))
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        if kafka is not None:
            kafka.__exit__(None, None, None)
    return samples.report("daemon", int(samples.series[-1][0]), args.size, time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="unique events to audit (default 100,000)")
    ap.add_argument("--size", type=int, default=200_000, help="wire bytes per event (default 200,000)")
    ap.add_argument("--batch", type=int, default=100, help="events per batch (default 100)")
    ap.add_argument("--every", type=int, default=5_000, help="sample RSS every this many events")
    ap.add_argument("--daemon", action="store_true", help="audit through `auditor run` on a broker")
    ap.add_argument("--bootstrap", help="with --daemon: an existing broker (default: start LocalKafka)")
    ap.add_argument("--native", action="store_true",
                    help="offline: the compiled hot path (the daemon's default) instead of the Python reference")
    ap.add_argument("--verbose", "-v", action="store_true", help="print each sample")
    args = ap.parse_args()
    out = daemon(args) if args.daemon else offline(args)
    print(json.dumps(out))
    return 0 if out["within_2x"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
