"""The commit sequence's seams without Kafka: the test hook, the split of a refused batch, the
agreement of a restored head with the committed offset, and the watchdog's verdicts."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamkit import Clock

from auditor.errors import ConfigError, TransientError
from auditor.stream.commit import COMMITTED, Outcome, first_offsets, next_offsets
from auditor.stream.lag import lag_of
from auditor.stream.processor import BatchResult
from auditor.stream.restore import Restored, disagreement
from auditor.stream.split import commit_or_split
from auditor.stream.testhook import TestHook
from auditor.stream.watchdog import Watchdog
from auditor.trail.chain import ChainHead

# ---------------------------------------------------------------- AUDITOR_TEST_HOOK


def test_hook_unset_is_none():
    assert TestHook.from_env({}) is None
    assert TestHook.from_env({"AUDITOR_TEST_HOOK": " "}) is None


def test_hook_parses_step_action_and_nth(tmp_path: Path):
    hook = TestHook.from_env({"AUDITOR_TEST_HOOK": "after_send_offsets:stop:3", "AUDITOR_TEST_HOOK_DIR": str(tmp_path)})
    assert hook is not None and hook.directory == tmp_path
    assert [(r.step, r.action, r.nth) for r in hook.rules] == [("after_send_offsets", "stop", 3)]
    two = TestHook.from_env({"AUDITOR_TEST_HOOK": "after_send_offsets:stop:8, after_commit:kill"})
    assert two is not None and two.spec == "after_send_offsets:stop:8,after_commit:kill:1"


@pytest.mark.parametrize("spec", ["after_lunch:stop", "after_commit:explode", "after_commit", "after_commit:stop:0",
                                  "after_commit:stop:x", "a:b:c:d"])
def test_hook_refuses_a_bad_spec_saying_what_is_allowed(spec: str):
    with pytest.raises(ConfigError, match="AUDITOR_TEST_HOOK"):
        TestHook.from_env({"AUDITOR_TEST_HOOK": spec})


def test_hook_kill_acts_at_the_nth_time_of_its_step_and_marks_the_file(tmp_path: Path):
    code = ("from auditor.stream.testhook import TestHook\n"
            "h = TestHook.from_env()\n"
            "for i in range(5):\n"
            "    h('after_commit'); h('after_begin'); print(i, flush=True)\n")
    env = {**os.environ, "AUDITOR_TEST_HOOK": "after_begin:kill:3", "AUDITOR_TEST_HOOK_DIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == -9
    assert p.stdout.split() == ["0", "1"]
    assert (tmp_path / "after_begin.reached").exists() and not (tmp_path / "after_commit.reached").exists()


def test_hook_hang_blocks_in_c_where_a_python_signal_handler_cannot_run(tmp_path: Path):
    code = ("import signal, sys\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(9))\n"
            "from auditor.stream.testhook import TestHook\n"
            "TestHook.from_env()('after_produce')\n")
    env = {**os.environ, "AUDITOR_TEST_HOOK": "after_produce:hang", "AUDITOR_TEST_HOOK_DIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = 60.0
        import time
        t0 = time.monotonic()
        while not (tmp_path / "after_produce.reached").exists():
            assert time.monotonic() - t0 < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        p.terminate()
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(2)  # the handler would exit 9 at once if it could run
    finally:
        p.kill()
        p.wait(10)


# ---------------------------------------------------------------- offsets of a batch

@dataclass
class Msg:
    t: str
    p: int
    o: int

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def value(self) -> bytes:
        return b"x"


def test_offsets_of_a_batch_per_partition():
    batch = [Msg("a", 0, 5), Msg("a", 1, 9), Msg("a", 0, 6), Msg("a", 0, 7)]
    assert next_offsets(batch) == {("a", 0): 8, ("a", 1): 10}
    assert first_offsets(batch) == {("a", 0): 5, ("a", 1): 9}


# ---------------------------------------------------------------- splitting a refused batch

def _result(batch) -> BatchResult:  # type: ignore[no-untyped-def]
    r = BatchResult()
    r.dead_letters = [f"m{m.o}" for m in batch]  # marks which messages the result is for
    return r


class Broker:
    """Refuses every commit that contains a poison offset (content error), or fails for a cluster reason."""

    def __init__(self, poison: set[int], cluster_failures: int = 0) -> None:
        self.poison, self.cluster_failures = poison, cluster_failures
        self.committed: list[list[int]] = []

    def commit(self, batch, result: BatchResult) -> Outcome:  # type: ignore[no-untyped-def]
        if self.cluster_failures:
            self.cluster_failures -= 1
            return Outcome(False, content_error=False, error="coordinator not available")
        if any(m.o in self.poison for m in batch) and result.dead_letters != ["unwritable"]:
            return Outcome(False, content_error=True, error="Broker: Message size too large")
        self.committed.append([m.o for m in batch])
        return COMMITTED


def unwritable(msg, error: str) -> BatchResult:  # type: ignore[no-untyped-def]
    r = BatchResult()
    r.dead_letters = ["unwritable"]
    return r


def test_a_refused_message_is_isolated_by_splitting_and_dead_lettered_the_rest_committed_in_order():
    batch = [Msg("t", i % 2, i) for i in range(10)]
    broker = Broker(poison={6})
    progress = commit_or_split(batch, None, _result, broker.commit, unwritable, after_failures=2)
    assert progress.failed == []
    flat = [o for part in broker.committed for o in part]
    assert flat == list(range(10)), "every message committed exactly once, in order"
    assert [6] in broker.committed, "the poison message was committed alone (as its dead letter)"
    assert progress.splits >= 3
    assert [r.dead_letters for _, r in progress.committed if len(r.dead_letters) == 1 and
            r.dead_letters[0] == "unwritable"] == [["unwritable"]]


def test_a_cluster_failure_is_never_split_and_rewinds_the_rest():
    batch = [Msg("t", 0, i) for i in range(8)]
    broker = Broker(poison=set(), cluster_failures=1)
    progress = commit_or_split(batch, None, _result, broker.commit, unwritable, after_failures=2)
    assert progress.splits == 0 and progress.committed == []
    assert [m.o for m in progress.failed] == list(range(8))


def test_a_cluster_failure_after_a_split_rewinds_only_what_was_not_committed():
    batch = [Msg("t", 0, i) for i in range(8)]
    broker = Broker(poison={1})
    calls = {"n": 0}

    def commit(part, result):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if [m.o for m in part] == [4, 5, 6, 7]:
            return Outcome(False, content_error=False, error="lost partitions")
        return broker.commit(part, result)

    progress = commit_or_split(batch, None, _result, commit, unwritable, after_failures=1)
    assert [o for part in broker.committed for o in part] == [0, 1, 2, 3]
    assert [m.o for m in progress.failed] == [4, 5, 6, 7]


def test_a_transient_dependency_failure_is_reported_not_split():
    def process(batch):  # type: ignore[no-untyped-def]
        raise TransientError("registry down")

    progress = commit_or_split([Msg("t", 0, 1)], None, process, Broker(set()).commit, unwritable, 2)
    assert progress.transient and [m.o for m in progress.failed] == [1]


# ---------------------------------------------------------------- restored head vs committed offset

HEAD = ChainHead("t/0", 5, b"\x01" * 32)


@pytest.mark.parametrize(("committed", "restored", "agrees"), [
    (-1001, Restored(), True),                 # nothing committed, empty chain: a new partition
    (10, Restored(HEAD, 9), True),             # the head is for the last committed offset
    (10, Restored(HEAD, 7), False),            # a zombie's commit not yet visible in the audit partition
    (10, Restored(HEAD, 12), False),           # offsets reset behind the chain
    (10, Restored(), False),                   # offsets but no chain
    (-1001, Restored(HEAD, 3), False),         # a chain but no offsets (expired)
])
def test_a_restored_head_is_trusted_only_when_it_agrees_with_the_committed_offset(committed, restored, agrees):
    why = disagreement("t/0", committed, restored)
    assert (why is None) == agrees
    if why is not None:
        assert "t/0" in why


def test_lag_counts_from_the_committed_offset_or_the_log_start():
    assert lag_of(committed=90, low=0, high=100) == 10
    assert lag_of(committed=-1001, low=40, high=100) == 60
    assert lag_of(committed=5, low=40, high=100) == 60


# ---------------------------------------------------------------- the watchdog's verdicts

def test_watchdog_fires_when_the_loop_stops_beating():
    clock = Clock()
    w = Watchdog(stall_timeout_s=60, call_margin_s=10, shutdown_timeout_s=30, fire=lambda r: None, clock=clock)
    w.beat()
    clock.now += 59
    assert w.overdue() is None
    clock.now += 2
    assert "no progress" in (w.overdue() or "")


def test_watchdog_fires_when_a_client_call_outlives_its_own_timeout_by_the_margin():
    clock = Clock()
    w = Watchdog(stall_timeout_s=5, call_margin_s=10, shutdown_timeout_s=30, fire=lambda r: None, clock=clock)
    with w.call("send_offsets_to_transaction", 30):
        clock.now += 39  # longer than the stall bound, within the call's own timeout + margin
        assert w.overdue() is None
        clock.now += 2
        reason = w.overdue() or ""
        assert "send_offsets_to_transaction" in reason and "30s timeout" in reason
    assert "no progress" in (w.overdue() or ""), "a call that returned is not progress by itself"
    w.beat()  # a batch committed
    assert w.overdue() is None


def test_watchdog_counts_a_stall_across_the_short_calls_of_a_loop_that_never_commits():
    """The loop keeps consuming (short calls that return) and never makes progress: the watchdog
    sees a call in progress at almost every look, and must still count the time since the last beat."""
    clock = Clock()
    w = Watchdog(stall_timeout_s=60, call_margin_s=10, shutdown_timeout_s=30, fire=lambda r: None, clock=clock)
    w.beat()
    for _ in range(59):
        with w.call("consume", 5.1):
            clock.now += 1
            assert w.overdue() is None
    clock.now += 1.5
    with w.call("consume", 5.1):
        clock.now += 0.1
        assert "no progress" in (w.overdue() or "")


def test_watchdog_bounds_the_shutdown():
    clock = Clock()
    w = Watchdog(stall_timeout_s=600, call_margin_s=600, shutdown_timeout_s=30, fire=lambda r: None, clock=clock)
    w.stopping()
    clock.now += 29
    w.beat()
    assert w.overdue() is None
    clock.now += 2
    assert "shutdown" in (w.overdue() or "")


def test_watchdog_thread_calls_fire_once_with_the_reason():
    import threading
    fired: list[str] = []
    done = threading.Event()

    def fire(reason: str) -> None:
        fired.append(reason)
        done.set()

    w = Watchdog(stall_timeout_s=0.2, call_margin_s=1, shutdown_timeout_s=30, fire=fire).start(interval=0.05)
    try:
        assert done.wait(10)
    finally:
        w.close()
    assert len(fired) == 1 and "no progress" in fired[0] and w.fired == fired[0]


def test_the_isolated_dead_letter_is_sealed_again_when_its_first_commit_fails_after_the_refusal():
    """After a refusal the producer may fail the next transaction once ("skipped sequence numbers");
    the dead letter is then built (sealed) again, since the abort dropped the working heads."""
    batch = [Msg("t", 0, 0)]
    built: list[BatchResult] = []
    outcomes = [Outcome(False, content_error=True, error="too large")] * 2 + \
        [Outcome(False, content_error=False, error="skipped sequence numbers"), COMMITTED]

    def commit(part, result):  # type: ignore[no-untyped-def]
        return outcomes.pop(0)

    def build(msg, error):  # type: ignore[no-untyped-def]
        built.append(unwritable(msg, error))
        return built[-1]

    progress = commit_or_split(batch, None, _result, commit, build, after_failures=2)
    assert progress.failed == [] and len(built) == 2
    assert progress.committed[0][1] is built[1], "the committed result is the one sealed after the last abort"
