"""The daemon's heap settings (intake.settle_heap) against what a batch allocates and frees.

A batch of 5,000 events allocates some 30,000 objects the garbage collector tracks (the messages,
the sealer's tuples, the outputs) that live until the batch after it committed, with the intake's
queues holding up to 32 batches of messages besides. With the young threshold below that, a young
collection ran at least once a batch, traversed those objects (and, every 10th, the older
generation they had been moved to), for objects that all die by reference count anyway: 0.2-0.3 s
of the main thread per 130,000 events in the daemon (bench/threads.py, gc callbacks). The
threshold must sit above one batch cycle's churn, so that only what outlives it (memo entries,
buffers that grow) ever brings a collection.

Run in a subprocess: the daemon's real step() (pipelined, real processor and commit path, the
clients stood in for) under settle_heap(), as ``auditor run`` sets it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r'''
import gc, json, sys, tempfile
from collections import deque
from itertools import cycle, islice
from pathlib import Path
from confluent_kafka import Message
from prometheus_client import CollectorRegistry
from auditor.config import load_config
from auditor.events.model import Event
from auditor.metrics import build_metrics
from auditor.native import NativeEventDecoder
from auditor.stream.app import load_packs
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.commit import BatchCommit
from auditor.stream.generate import stream
from auditor.stream.intake import settle_heap
from auditor.stream.ownership import PartitionState
from auditor.stream.processor import BatchProcessor, Routing
from auditor.stream.produce import encode
from auditor.stream.runner import Daemon
from auditor.trail.keys import KeyRing

BATCH, BATCHES, WARM = 5000, 9, 3
packs = load_packs(("ipasar", "waimaotong", "ipmart", "inper", "thisproduct"))
pool = [encode(e) if isinstance(e, Event) else e for e in islice(stream(list(packs.values()), seed=1), 4000)]
values, offsets = deque(islice(cycle(pool), BATCH * BATCHES)), [0, 0, 0]

class Consumer:
    """Builds its messages as consume() hands them over (allocated then, as librdkafka's are),
    in runs of 1,000 of one partition, as fetches come."""
    def consume(self, n, timeout):
        out = []
        for _ in range(min(n, len(values))):
            p = (offsets[0] + offsets[1] + offsets[2]) // 1000 % 3
            out.append(Message(topic="events", partition=p, offset=offsets[p], value=values.popleft(), key=None))
            offsets[p] += 1
        return out
    def consumer_group_metadata(self): return None
    def pause(self, tps): pass
    def resume(self, tps): pass

class Producer:
    def begin_transaction(self): pass
    def produce(self, *args, **kwargs): pass
    def send_offsets_to_transaction(self, *args): pass
    def commit_transaction(self, *args): pass

keys = KeyRing.generate(Path(tempfile.mkdtemp()) / "keys", "example.com/auditor")
cfg = load_config(env={"AUDITOR_BATCH_MAX_EVENTS": str(BATCH), "AUDITOR_BATCH_MAX_MS": "1"})
proc = BatchProcessor(NativeEventDecoder(), packs, keys.pseudonymizer, Routing("audit", "violations", "dead", 3), "t")
cp = Checkpointer(keys.signer, keys.verifier, "audit.checkpoints", audit_partitions=3, partitions=3)
d = Daemon(cfg, proc, build_metrics(CollectorRegistry()), checkpoints=cp)
consumer, producer = Consumer(), Producer()
d.consumer, d.producer = consumer, producer
d.committer = BatchCommit(producer, consumer, proc, d.watchdog, None, None, d.metrics)
d.committer.checkpoints = cp
d.ownership.attach(consumer, None)
for part in range(3):
    d.ownership.states[("events", part)] = PartitionState(since=0.0, restored=True)
    proc.set_head(f"events/{part}", None)
settle_heap()
seen = []
gc.callbacks.append(lambda phase, info: seen.append(info["generation"]) if phase == "stop" else None)
steps = audited = 0
while values or d.intake.buffers:
    if steps == WARM:
        seen.clear()
    d.step()
    steps += 1
d._drain()
print(json.dumps({"collections": seen, "steps": steps, "batches": d.batches, "threshold": gc.get_threshold()}))
'''


def test_a_batch_cycle_of_the_daemon_brings_no_garbage_collection():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["batches"] == 9, got
    assert got["collections"] == [], f"collections after the warm-up batches: {got}"
