"""Large foreign messages in the audit and checkpoint topics while a chain is restored (attops).

Anyone who may write to the audit topic can append records there (att12, attd). The chain restore
(auditor.stream.chainrestore) reads both partitions backwards a window of up to 2,000 messages at a
time and kept the whole window, whatever its messages weigh: 2,000 messages of a topic's
max.message.bytes (1 MiB by default) held ~2 GiB at every restore, i.e. on every assignment. It also
logged one error per unreadable message. The windows are now bounded in bytes as well
(``WINDOW_BYTES``) and the unreadable messages of a restore are logged once, counted.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from confluent_kafka import Producer
from daemonkit import (
    Feeder,
    InProcessDaemon,
    Setup,
    TopicTail,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    make_setup,
    mixed_events,
)
from structlog.testing import capture_logs

from auditor.events.model import Event
from auditor.stream.chainrestore import restore_chains
from auditor.stream.topics import checkpoint_topic_of
from auditor.trail.checkpoint import origin_for
from auditor.trail.keys import KeyRing

pytestmark = pytest.mark.kafka
#: foreign messages appended to each partition, and their size: 100 MiB on each
JUNK, SIZE = 400, 256 * 1024


def audited_chain(tmp_path: Path, bootstrap: str, events: int, mixed: int, seed: int) -> tuple[Setup, str, str]:
    """A one-partition setup whose chain holds ``events`` records (the first events of ``mixed_events(mixed,
    seed)``), written by an in-process daemon (batches of 40): (setup, the chain, its checkpoint topic)."""
    setup = make_setup(tmp_path, bootstrap, partitions=1, trail=False, batch_max_events=40)
    feeder = Feeder(setup.bootstrap, setup.events)
    for e in [e for e in mixed_events(mixed, seed=seed) if isinstance(e, Event)][:events]:
        feeder.send(e, partition=0)
    feeder.flush()
    with InProcessDaemon(setup.config()) as d, TopicTail(setup.bootstrap, setup.audit) as tail:
        tail.wait_for(events, 90, "(in-process daemon)")
    assert d.exit_code == 0
    return setup, f"{setup.events}/0", checkpoint_topic_of(setup.audit)


def test_a_restore_past_large_foreign_messages_keeps_a_bounded_window_and_logs_once(tmp_path, kafka_bootstrap):
    setup, chain, checkpoints = audited_chain(tmp_path, kafka_bootstrap, 50, mixed=60, seed=11)
    p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    for i in range(JUNK):  # not records (and not checkpoints): the restore passes them by
        junk = (b"%06d" % i) * (SIZE // 6)
        p.produce(setup.audit, junk, partition=0)
        p.produce(checkpoints, junk, key=b"junk", partition=0)
        p.poll(0)
    assert p.flush(120) == 0
    keys = KeyRing.load(setup.keys_dir)
    tracemalloc.start()
    try:
        with capture_logs() as logs:
            (restored,) = restore_chains(setup.admin_conf, setup.audit, 0, checkpoints, 0, [chain],
                                         keys.signer.name, keys.verifier).values()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not restored.forged and restored.problem is None and restored.log.head.size == 50
    print(f"restore past {JUNK} x {SIZE} B on each partition: peak traced {peak / 2**20:.1f} MiB")
    assert peak < 24 * 2**20, f"{peak / 2**20:.1f} MiB traced during the restore"
    unreadable = [e for e in logs if "unreadable" in e["event"]]
    assert len(unreadable) == 1 and unreadable[0]["messages"] == JUNK, unreadable[:3]


def test_forged_checkpoints_keyed_for_the_chain_are_logged_once_per_restore(tmp_path, kafka_bootstrap):
    """A checkpoint keyed with the chain's origin (public: the key name and the chain id) that does not
    open was logged as one error line each, at every restore: 500 forged, 500 lines."""
    setup, chain, checkpoints = audited_chain(tmp_path, kafka_bootstrap, 20, mixed=30, seed=12)
    keys = KeyRing.load(setup.keys_dir)
    origin = origin_for(keys.signer.name, chain).encode()
    p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    for i in range(500):
        p.produce(checkpoints, b"forged %d" % i, key=origin, partition=0)
    assert p.flush(60) == 0
    with capture_logs() as logs:
        (restored,) = restore_chains(setup.admin_conf, setup.audit, 0, checkpoints, 0, [chain],
                                     keys.signer.name, keys.verifier).values()
    assert not restored.forged and restored.problem is None and restored.log.head.size == 20
    invalid = [e for e in logs if "checkpoint" in e["event"] and e["log_level"] == "error"]
    assert len(invalid) == 1 and invalid[0]["checkpoints"] == 500, (len(invalid), invalid[:2])
