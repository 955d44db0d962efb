"""A single broker that dies or stalls under the daemon (issue 9 item 2): SIGKILL and restart,
SIGSTOP then SIGCONT, and SIGTERM to the daemon while the broker is stalled.

Each broker here is the test's own (``own_broker``). After the fault the audit must move again
within a bound, either because the daemon recovered or because it exited with its own
documented code and the supervisor (the orchestrator) restarted it.
"""

from __future__ import annotations

import signal
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from daemonkit import Feeder, PacedFeeder, make_setup, wait_until
from faultkit import (
    Expect,
    Supervisor,
    assert_trail_intact,
    committed_count,
    configure,
    endless,
    wait_audited,
)
from prometheus_client import CollectorRegistry

from auditor.metrics import build_metrics
from auditor.stream.lag import LagMonitor
from auditor.stream.restore import open_transaction_gap

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

#: how long the audit may stand still after the broker is back (recovery or watchdog exit + restart)
RECOVERY_S = 150


def _run_fault(own_broker, tmp_path, seed: int, fault) -> None:  # type: ignore[no-untyped-def]
    bootstrap = own_broker.bootstrap_servers
    setup = make_setup(tmp_path, bootstrap, partitions=3, trail=True, batch_max_events=200)
    feed = PacedFeeder(Feeder(bootstrap, setup.events), iter(endless(seed)), rate=200)
    sup = Supervisor(setup, "broker-fault")
    try:
        sup.current.wait_ready(90)
        feed.start()
        wait_audited(setup, 600, 90, "before the fault", describe=sup.describe)
        fault()
        before = committed_count(bootstrap, setup.audit)
        wait_audited(setup, before + 400, RECOVERY_S, "after the broker came back (the daemon recovered, or "
                     "exited with its own code and was restarted)", describe=sup.describe)
        assert feed.flowing, "the feeder stopped before the audit moved again"
        sent = feed.finish(timeout=120)
        wait_audited(setup, len(sent), RECOVERY_S, "after the feeder stopped", describe=sup.describe)
        sup.current.wait_ready(60)
        assert sup.current.get("/healthz")[0] == 200, sup.describe()
        assert sup.stop(within=40) == 0, sup.describe()
        sup.assert_exits_documented()
    finally:
        feed.halt.set()
        sup.kill_all()
    assert sup.trail_dir is not None
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[sup.trail_dir])


def test_broker_sigkill_and_restart(own_broker, tmp_path):
    def fault() -> None:
        own_broker.kill()
        time.sleep(5)
        own_broker.restart()

    _run_fault(own_broker, tmp_path, 41, fault)


def test_broker_down_20s_then_restarted_the_daemon_resumes_without_exiting(own_broker, tmp_path):
    """attops: with the broker SIGKILLed for 20 s and restarted (same port and data), the producer
    re-bootstrapped while no broker was up and its send_offsets_to_transaction then waited on the
    decommissioned group coordinator (librdkafka #5511) past its own timeout (#5456), until the
    watchdog ended the daemon (exit 4) ~60 s after the broker was back: ~90 s of audit lost per
    broker restart. The same daemon must audit again within ``resume_s`` of the broker's return."""
    bootstrap = own_broker.bootstrap_servers
    setup = make_setup(tmp_path, bootstrap, partitions=3, trail=True, batch_max_events=200)
    feed = PacedFeeder(Feeder(bootstrap, setup.events), iter(endless(44)), rate=200)
    sup = Supervisor(setup, "broker-down")
    resume_s = 30
    try:
        sup.current.wait_ready(90)
        feed.start()
        wait_audited(setup, 600, 90, "before the fault", describe=sup.describe)
        own_broker.kill()
        time.sleep(20)
        own_broker.restart()
        back = time.monotonic()
        before = committed_count(bootstrap, setup.audit)
        wait_audited(setup, before + 400, resume_s, "after the broker came back", describe=sup.describe)
        print(f"resumed {time.monotonic() - back:.1f} s after the broker was back", flush=True)
        assert sup.exits == [], f"the daemon exited after the broker came back: {sup.describe()}"
        assert feed.flowing, "the feeder stopped before the audit moved again"
        sent = feed.finish(timeout=120)
        wait_audited(setup, len(sent), RECOVERY_S, "after the feeder stopped", describe=sup.describe)
        assert sup.exits == [], f"the daemon exited after the broker came back: {sup.describe()}"
        assert sup.stop(within=40) == 0, sup.describe()
    finally:
        feed.halt.set()
        sup.kill_all()
    assert sup.trail_dir is not None
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[sup.trail_dir])


def test_broker_sigstop_then_sigcont(own_broker, tmp_path):
    """Past its session the broker is fenced by its own controller on SIGCONT, and its partitions move
    to a new leader epoch (when the controller's check runs before the broker's heartbeat). Before the
    fix every partition then stayed paused with FENCED_LEADER_EPOCH, with no progress and no exit."""
    def fault() -> None:
        own_broker.send_signal(signal.SIGSTOP)
        time.sleep(20)  # longer than the session timeout (10 s)
        own_broker.send_signal(signal.SIGCONT)

    _run_fault(own_broker, tmp_path, 42, fault)


def test_sigterm_during_a_broker_stall_exits_within_shutdown_timeout(own_broker, tmp_path):
    """README: SIGTERM is honoured within shutdown_timeout_s even while the broker is gone; issue 9
    item 2: even while the main thread is blocked in the client."""
    bootstrap = own_broker.bootstrap_servers
    setup = make_setup(tmp_path, bootstrap, partitions=3, trail=True, batch_max_events=200)
    bound = 10
    configure(setup, {"shutdown_timeout_s": bound})
    feed = PacedFeeder(Feeder(bootstrap, setup.events), iter(endless(43)), rate=200)
    sup = Supervisor(setup, "stall-term")
    again: Supervisor | None = None
    try:
        sup.current.wait_ready(90)
        feed.start()
        wait_audited(setup, 400, 90, "before the stall", describe=sup.describe)
        own_broker.send_signal(signal.SIGSTOP)
        time.sleep(4)  # the daemon is now blocked on the broker, most likely inside a transaction
        sup.release()
        t0 = time.monotonic()
        sup.current.signal(signal.SIGTERM)
        code = sup.current.wait_exit(bound + 5, f"after SIGTERM with the broker stalled (shutdown_timeout_s={bound})")
        took = time.monotonic() - t0
        assert code in (0, 4), f"exit {code} after SIGTERM during a stall: {sup.describe()}"
        assert took <= bound + 5
        own_broker.send_signal(signal.SIGCONT)
        again = Supervisor(setup, "stall-term")
        again.current.wait_ready(90)
        sent = feed.finish(timeout=120)
        wait_audited(setup, len(sent), RECOVERY_S, "after the restart", describe=again.describe)
        assert again.stop(within=40) == 0, again.describe()
    finally:
        own_broker.send_signal(signal.SIGCONT)
        feed.halt.set()
        sup.kill_all()
        if again is not None:
            again.kill_all()
    assert sup.trail_dir is not None
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[sup.trail_dir])


def test_offsets_are_read_again_after_the_leader_epoch_moved_on(own_broker):
    """A broker that comes back (after a SIGKILL here, deterministically; after a SIGSTOP past its
    session when its controller fences it, as in the scenario above) leads its partitions with a new
    leader epoch. Long-lived admin clients keep sending the old epoch and are refused
    (FENCED_LEADER_EPOCH), or time out on the group's offsets, for good: the chain restore's
    open-transaction check and the lag thread, which each keep one admin client, must answer again."""
    bootstrap = own_broker.bootstrap_servers
    own_broker.create_topics(["epoch"], partitions=2)
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})

    def send(partition: int) -> None:
        producer.produce("epoch", b"x", partition=partition)
        assert producer.flush(30) == 0

    send(0)
    send(1)
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    registry = CollectorRegistry()
    owned = frozenset({("epoch", 0), ("epoch", 1)})
    lag = LagMonitor({"bootstrap.servers": bootstrap, "log_level": 0}, "epoch-group", lambda: owned,
                     build_metrics(registry), 1).start()
    gaps: list[object] = []

    def gap_read() -> bool:  # the restore retries every restore.retry_s, and so does this test
        try:
            gaps.append(open_transaction_gap(admin, "epoch", 1, 10))
        except (KafkaException, TimeoutError) as exc:
            gaps.append(exc)
        return gaps[-1] == 0

    def lag_is(n: int) -> bool:
        return registry.get_sample_value("auditor_consumer_lag", {"topic": "epoch", "partition": "0"}) == n

    try:
        wait_until(gap_read, 30, lambda: f"the first read of the audit partition's offsets (last: {gaps[-1:]})")
        wait_until(lambda: lag_is(1), 30, "the lag thread's first measure (lag 1)")

        def led_again() -> int:  # the controller gave the partitions a leader again, with a new epoch
            return own_broker.log_path.read_text(errors="replace").count("handleBrokerUnfenced: changing")

        before = led_again()
        own_broker.kill()
        own_broker.restart()
        wait_until(lambda: led_again() > before, 30, "the partitions to be led again under a new leader epoch")
        send(0)
        wait_until(gap_read, 20, lambda: f"the restore's admin client to read offsets again (last: {gaps[-1:]})",
                   interval=1)
        wait_until(lambda: lag_is(2), 20, "the lag thread to measure again after the restart (lag 2)")
    finally:
        lag.close()
