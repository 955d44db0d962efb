"""The fault suite (marker ``faults``): daemonkit from the integration tests, and brokers that
the scenarios may kill, stall and restart (their own, never the session's shared broker)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # daemonkit

from auditor.localkafka.broker import LocalKafka  # noqa: E402
from auditor.localkafka.cluster import LocalKafkaCluster  # noqa: E402

pytest.register_assert_rewrite("faultkit", "hangkit")  # the scenarios' checks assert there (assert_trail_intact, ...)


def _progress(message: str) -> None:
    print(f"[localkafka] {message}", file=sys.stderr, flush=True)


#: the scenarios the whole test suite (tests/run_all.sh, CI) runs; the rest run with `-m faults`
#: or AUDITOR_FAULTS=all (README "Fault suite": the whole fault suite takes longer than a quarter of CI).
#: The zombie frozen between send_offsets and commit is not here: tests/integration/test_daemon_ownership.py
#: guards the same takeover in every run in half the time.
FAST = {
    "test_sigkill_at_each_transaction_step_loses_and_duplicates_nothing[after_send_offsets]",
    "test_malformed_and_spoofed_headers",
    "test_sigkill_while_a_batch_commits_and_the_next_is_processed_loses_and_duplicates_nothing",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    whole = os.environ.get("AUDITOR_FAULTS") == "all" or "faults" in (config.option.markexpr or "")
    skip = pytest.mark.skip(reason="in the full fault suite only: python -m pytest -m faults tests/faults")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.kafka)
            if not whole and item.name not in FAST:
                item.add_marker(skip)


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    """A single broker for this test alone (it gets killed or stalled)."""
    with LocalKafka(progress=_progress) as kafka:
        yield kafka
        if kafka.is_running():
            kafka.send_signal(signal.SIGCONT)  # SIGCONT: a stalled JVM cannot handle the SIGTERM of stop()


@pytest.fixture(scope="module")
def three_brokers() -> Iterator[LocalKafkaCluster]:
    """Three KRaft nodes (combined broker and controller), shared by one module's tests; a test
    that kills a node restarts it before it ends."""
    with LocalKafkaCluster(3, progress=_progress) as cluster:
        yield cluster
