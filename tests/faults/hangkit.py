"""The hanging-transaction scenarios' kit (moved out of test_attr_hanging.py so that more test modules use it;
atx): :func:`make_hanging` makes a transaction of the daemon's own producer hang on a real broker, the
rest checks how it ended."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from daemonkit import Feeder, Setup, make_setup, mixed_events, wait_until
from faultkit import Daemon, configure, reached, read_committed

from auditor.stream.restore import stable_offsets
from auditor.stream.topics import checkpoint_topic_of

#: the restarted daemons' transaction timeout and settle time: a transaction open longer than 10 + 3 s
#: is hanging (the frozen daemon A keeps the default 60 s: its transaction must outlive two broker stops)
FAST = {"AUDITOR_TRANSACTION_TIMEOUT_MS": "10000", "AUDITOR_RESTORE_SETTLE_TIMEOUT_S": "3",
        "AUDITOR_RESTORE_RETRY_S": "1"}
OUTPUTS = ("audit", "checkpoints", "violations", "dead-letter")


def _stop_cleanly(broker: Any) -> None:
    broker.send_signal(signal.SIGTERM)
    wait_until(lambda: not broker.is_running(), 90, "the broker to stop after SIGTERM")


def _partition_dirs(data: Path, setup: Setup, revert: tuple[str, ...]) -> list[str]:
    topics = {"audit": setup.audit, "checkpoints": checkpoint_topic_of(setup.audit),
              "violations": setup.violations, "dead-letter": setup.dead_letter,
              "__consumer_offsets": "__consumer_offsets"}
    names = [topics[r] for r in revert]
    return sorted(d.name for d in data.iterdir() if d.is_dir() and d.name.rsplit("-", 1)[0] in names)


def _open_gaps(setup: Setup, partitions: int) -> dict[int, int]:
    """Per audit partition, high watermark minus last stable offset (asked again while a broker that
    just started answers with a stale leader epoch)."""
    out: dict[int, int] = {}

    def asked() -> bool:
        admin = AdminClient(setup.admin_conf)
        try:
            for p in range(partitions):
                stable, high = stable_offsets(admin, setup.audit, p, 10)
                out[p] = high - stable
        except KafkaException:
            return False
        return True

    wait_until(asked, 60, "the audit partitions' offsets")
    return out


def make_hanging(broker: Any, tmp_path: Path, *, partitions: int, revert: tuple[str, ...],
                 instance_id: str = "hang", records_open: bool = True) -> tuple[Setup, Feeder]:
    """A setup whose instance ``instance_id`` left a transaction hanging on the partitions of ``revert``
    (its records there open for good, the coordinator done with it). The broker is running again.
    ``records_open``: the audit partition is among them (checked); False: it is not (atx)."""
    bootstrap = broker.bootstrap_servers
    for attempt in range(1, 4):
        # A's records are sent by librdkafka's own thread; on a loaded machine send_offsets can return
        # (and the hook freeze the whole process) before they reach the broker: then they never will
        # while A is frozen, and the attempt starts again with fresh topics (seen 1 in 5 at load ~18)
        work = tmp_path / f"attempt-{attempt}"
        work.mkdir()
        setup = make_setup(work, bootstrap, partitions=partitions, trail=True, batch_max_events=40)
        configure(setup, {"batch": {"pipeline": False}})
        hooks = work / "hooks"
        feeder = Feeder(bootstrap, setup.events)
        feeder.send_all(mixed_events(400, seed=71))
        a = Daemon(setup, instance_id, {"AUDITOR_TEST_HOOK": "after_send_offsets:stop:4,after_commit:kill:4",
                                        "AUDITOR_TEST_HOOK_DIR": str(hooks), "AUDITOR_TRAIL_DIR": str(work / "trail-a"),
                                        "AUDITOR_TRANSACTION_TIMEOUT_MS": "300000"})
        wait_until(lambda h=hooks: reached(h, "after_send_offsets"), 90,
                   lambda d=a: f"A to freeze: {d.describe()}")
        try:
            wait_until(lambda s=setup: any(_open_gaps(s, partitions).values()), 20,
                       "the frozen transaction's records on an audit partition")
            break
        except AssertionError:
            a.kill()
            if attempt == 3:
                raise
    try:
        data = Path(broker.work_dir) / "data"
        _stop_cleanly(broker)
        snapshot = tmp_path / "snapshot"
        shutil.copytree(data, snapshot)
        broker.restart()
        a.signal(signal.SIGCONT)  # it commits that transaction, then the hook kills it
        assert a.wait_exit(90, "A committing its frozen transaction") == -signal.SIGKILL, a.describe()
        # commit_transaction returns at PREPARE_COMMIT: the markers, then COMPLETE_COMMIT, come after it
        wait_until(lambda: not any(_open_gaps(setup, partitions).values()), 60, "the commit's markers")
        time.sleep(5)
        _stop_cleanly(broker)
        for name in _partition_dirs(data, setup, revert):
            shutil.rmtree(data / name)
            shutil.copytree(snapshot / name, data / name)
        broker.restart()
    finally:
        a.kill()
    time.sleep(5)  # a coordinator that had not completed the commit would write its markers by now
    gaps = _open_gaps(setup, partitions)
    if records_open:
        assert any(gaps.values()), f"no audit partition holds the transaction open after the revert: {gaps}"
    else:
        assert not any(gaps.values()), f"an audit partition holds a transaction open: {gaps}"
    return setup, feeder


def violations_seen_once(setup: Setup) -> None:
    """Each input's violation message, and each dead letter, visible once to a read_committed reader."""
    sources: Counter[str] = Counter()
    for _p, _o, _key, value, _h in read_committed(setup.bootstrap, setup.violations):
        sources[json.loads(value)["source"]] += 1
    doubled = sorted(s for s, n in sources.items() if n > 1)
    assert sources, "no violation at all: the scenario proves nothing"
    assert not doubled, (f"{len(doubled)} of {len(sources)} inputs have their violation visible twice, "
                         f"e.g. {doubled[:3]}")


def run_to_end(setup: Setup, feeder: Feeder, daemons: list[Daemon], more: int = 200) -> None:
    feeder.send_all(mixed_events(more, seed=72))
    total = feeder.count

    def audited() -> bool:
        raw = read_committed(setup.bootstrap, setup.audit, timeout=10, lower_bound=True)
        return len(raw) >= total

    wait_until(audited, 120, lambda: f"{total} inputs audited: " + "\n".join(d.describe() for d in daemons))
