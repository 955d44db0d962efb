"""Liveness on a real broker: a main thread wedged inside a C call (the test hook's ``hang``, like
librdkafka 2.16 blocking in send_offsets_to_transaction past its timeout) is detected by the
watchdog (exit 4), lag keeps being measured meanwhile, SIGTERM is honoured within
shutdown_timeout_s, and an instance fenced by a newer one with the same instance id exits 3 with
its file copy closed by a final checkpoint."""

from __future__ import annotations

import itertools
import time

import pytest
from daemonkit import Feeder, Fleet, PacedFeeder, TopicTail, make_setup, mixed_events, wait_until

from auditor.trail.keys import KeyRing
from auditor.trail.verify import verify_trail

pytestmark = pytest.mark.kafka


def _wedged(fleet: Fleet, tmp_path, instance: str, **env: str):  # type: ignore[no-untyped-def]
    hook_dir = tmp_path / f"hook-{instance}"
    d = fleet.start(instance, env={"AUDITOR_TEST_HOOK": "after_send_offsets:hang:3",
                                   "AUDITOR_TEST_HOOK_DIR": str(hook_dir), "AUDITOR_LAG_INTERVAL_S": "0.5", **env})
    d.wait_ready(60)
    return d, hook_dir / "after_send_offsets.reached"


def test_a_wedged_main_loop_fails_health_and_exits_4_while_lag_keeps_moving(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False)
    feeder = Feeder(kafka_bootstrap, setup.events)
    with Fleet(setup) as fleet:
        d, reached = _wedged(fleet, tmp_path, "wedged-1", AUDITOR_WATCHDOG_STALL_TIMEOUT_S="12")
        feed = PacedFeeder(feeder, itertools.cycle(mixed_events(2000, seed=41)), rate=200)
        feed.start()
        wait_until(reached.exists, 60, lambda: f"the main thread to wedge: {d.describe()}")
        time.sleep(1.5)
        first = d.metric("auditor_consumer_lag")
        time.sleep(3)
        later = d.metric("auditor_consumer_lag")
        assert later > first > 0, f"lag frozen during the stall: {first} then {later}"
        assert d.proc.wait(60) == 4, d.describe()
        feed.finish()
    (fired,) = d.events("watchdog: exiting so that the process is restarted")
    assert "no progress" in fired["reason"] and fired["exit_code"] == 4


def test_a_client_call_past_its_own_timeout_fails_health_and_exits_4(kafka_bootstrap, tmp_path):
    """The main thread wedged inside the watched send_offsets_to_transaction call (hook step
    ``in_send_offsets``), as librdkafka 2.16 can block there far past its timeout: the watchdog's call
    rule fires once the call has run its own 30 s timeout plus watchdog.call_margin_s, well before the
    stall bound, and the process exits 4 (it marks itself unhealthy first; the exit follows at once)."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False)
    feeder = Feeder(kafka_bootstrap, setup.events)
    hook_dir = tmp_path / "hook-call"
    with Fleet(setup) as fleet:
        d = fleet.start("in-call", env={"AUDITOR_TEST_HOOK": "in_send_offsets:hang:3",
                                        "AUDITOR_TEST_HOOK_DIR": str(hook_dir),
                                        "AUDITOR_WATCHDOG_CALL_MARGIN_S": "5",
                                        "AUDITOR_WATCHDOG_STALL_TIMEOUT_S": "600"})
        d.wait_ready(60)
        feed = PacedFeeder(feeder, itertools.cycle(mixed_events(2000, seed=44)), rate=200)
        feed.start()
        wait_until((hook_dir / "in_send_offsets.reached").exists, 60, lambda: f"the call to wedge: {d.describe()}")
        wedged_at = time.monotonic()
        wait_until(lambda: d.proc.poll() is not None, 90,
                   lambda: f"the watchdog to end a call past its timeout: {d.describe()}", interval=0.2)
        took = time.monotonic() - wedged_at
        feed.finish()
    assert d.proc.returncode == 4, d.describe()
    assert 30 + 5 <= took + 1 < 30 + 5 + 30, f"exit {took:.0f}s after the call wedged (timeout 30 s + margin 5 s)"
    (fired,) = d.events("watchdog: exiting so that the process is restarted")
    assert "send_offsets_to_transaction" in fired["reason"] and "past its own 30s timeout" in fired["reason"]


def test_sigterm_is_honoured_while_the_main_thread_is_wedged_in_a_c_call(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False)
    feeder = Feeder(kafka_bootstrap, setup.events)
    with Fleet(setup) as fleet:
        d, reached = _wedged(fleet, tmp_path, "wedged-2", AUDITOR_SHUTDOWN_TIMEOUT_S="5")
        feed = PacedFeeder(feeder, itertools.cycle(mixed_events(2000, seed=42)), rate=200)
        feed.start()
        wait_until(reached.exists, 60, lambda: f"the main thread to wedge: {d.describe()}")
        time.sleep(1)
        started = time.monotonic()
        assert d.terminate(within=20) == 4, d.describe()
        assert time.monotonic() - started < 15
        feed.finish()
    assert d.events("shutdown requested")
    (fired,) = d.events("watchdog: exiting so that the process is restarted")
    assert "shutdown" in fired["reason"]


def test_an_instance_fenced_by_a_newer_one_exits_3_with_a_final_checkpoint(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=True)
    feeder = Feeder(kafka_bootstrap, setup.events)
    with Fleet(setup) as fleet, TopicTail(kafka_bootstrap, setup.audit) as tail:
        old = fleet.start("same-id")
        old.wait_ready(60)
        feed = PacedFeeder(feeder, itertools.cycle(mixed_events(2000, seed=43)), rate=200)
        feed.start()
        tail.wait_for(200, 60, "before the second instance starts")
        new = fleet.start("same-id", env={"AUDITOR_TRAIL_DIR": str(tmp_path / "trail-new")})
        assert old.proc.wait(90) == 3, old.describe()
        new.wait_ready(60)
        feed.finish()
        assert new.terminate(within=30) == 0, new.describe()
    assert any("fenced" in (doc.get("event", "") + str(doc.get("error", ""))) for doc in old.log_lines()), \
        "the fenced instance does not say why it stopped"
    assert setup.trail_dir is not None
    report = verify_trail(setup.trail_dir, KeyRing.load(setup.keys_dir).verifier)
    assert report.ok, [str(i) for i in report.issues[:5]]
    assert report.records > 0 and report.checkpoints > 0
    assert report.covered == report.chains, "records after the last checkpoint: no final checkpoint at close"
