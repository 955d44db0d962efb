"""attr: an output refused on the checkpoint topic (ad6b5c2: no delivery callback per output; the
commit reads the refused output's code from the transaction's error).

The checkpoint topic's ``max.message.bytes`` shrinks below every signed checkpoint while the daemon
runs: every transaction carries one, so every transaction is refused. Nothing may be committed past
a refused checkpoint (audit records that no signed checkpoint covers), and no innocent input may be
dead-lettered as unwritable for it (the split isolates one message whose outputs still include a
refused checkpoint). Once the limit is back, every input is audited once and `auditor verify
kafka://` passes (each record under a signed checkpoint)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from daemonkit import (
    Feeder,
    InProcessDaemon,
    TopicTail,
    assert_exactly_once,
    fault_suite_only,
    make_setup,
    mixed_events,
    read_audit,
    read_topic,
    set_topic_config,
)

from auditor.events.model import Event
from auditor.stream.topics import checkpoint_topic_of
from auditor.trail.record import RecordType

pytestmark = [pytest.mark.kafka, pytest.mark.faults, fault_suite_only]  # ~40 s: the full fault suite only

REPO = Path(__file__).resolve().parents[2]


def _config(bootstrap: str, topic: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (fut,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return str(fut.result(30)[name].value)


def test_a_refused_checkpoint_commits_nothing_and_dead_letters_no_innocent_input(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False, batch_max_events=20)
    checkpoints = checkpoint_topic_of(setup.audit)
    events = [e for e in mixed_events(200, seed=9) if isinstance(e, Event)][:90]
    feeder = Feeder(kafka_bootstrap, setup.events)
    original = _config(kafka_bootstrap, checkpoints, "max.message.bytes")
    with TopicTail(kafka_bootstrap, setup.audit) as tail, InProcessDaemon(setup.config()) as daemon:
        feeder.send_all(events[:30])
        tail.wait_for(30, 60, "(before the checkpoint topic shrinks)")
        sizes = [len(m.value or b"") for m in read_topic(kafka_bootstrap, checkpoints)]
        assert sizes and min(sizes) > 200, sizes
        set_topic_config(kafka_bootstrap, checkpoints, "max.message.bytes", "150")  # below every checkpoint
        feeder.send_all(events[30:])
        deadline = time.monotonic() + 15  # many transactions tried and refused, batches split to single inputs
        while time.monotonic() < deadline:
            tail.poll()
        assert len(tail.messages) == 30, "audit records committed with their checkpoint refused"
        assert daemon.thread.is_alive()
        splits = daemon.sample("auditor_batch_splits_total")
        set_topic_config(kafka_bootstrap, checkpoints, "max.message.bytes", original)
        tail.wait_for(len(feeder.sent), 120, "(once the checkpoint topic accepts checkpoints again)")
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(entries, feeder.sent, setup.events)
    rejected = [e.record for e in entries if e.record.record_type is RecordType.REJECTION]
    assert not rejected, f"{len(rejected)} valid inputs rejected (unwritable) for a refused checkpoint"
    assert read_topic(kafka_bootstrap, setup.dead_letter) == []
    assert splits > 0, "the refusal never reached the commit as a content error (no split)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    r = subprocess.run([sys.executable, "-m", "auditor", "verify", f"kafka://{kafka_bootstrap}/{setup.audit}",
                        "--pubkey", str(setup.keys_dir / "signing.pub")], capture_output=True, text=True,
                       timeout=180, env=env, stdin=subprocess.DEVNULL, check=False, cwd=REPO.parent)
    assert r.returncode == 0, f"auditor verify kafka:// exit {r.returncode}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
