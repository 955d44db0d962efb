"""batch.pipeline under faults: the daemon killed, or frozen past its session, at the moment the next
batch is processed (chained after the in-flight batch's working heads) while the in-flight batch's
send_offsets + commit run on the commit worker (AUDITOR_TEST_HOOK step ``next_processed``).

A backlog of full batches comes first (a batch gathers until the in-flight one committed unless it
is full, so at a paced rate alone the next batch is processed after the commit); events then flow
from a paced feeder through the fault; the audit topic is then counted by the
independent reader (faultkit) and verified: no loss, no duplicate, every chain intact.
"""

from __future__ import annotations

import pytest
from faultkit import sigkill_at_hook_loses_and_duplicates_nothing, zombie_frozen_at_hook_does_not_fork_the_chain

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

STEP = "next_processed"
#: sent at once before the paced feed: full batches, so that a batch is processed while one commits
BACKLOG = 3000


def test_sigkill_while_a_batch_commits_and_the_next_is_processed_loses_and_duplicates_nothing(
        kafka_bootstrap, tmp_path):
    sigkill_at_hook_loses_and_duplicates_nothing(
        kafka_bootstrap, tmp_path, STEP, instance_id="pipe-kill", seed=41, rate=600, backlog=BACKLOG,
        reaching="process a batch while its 3rd in-flight one commits")


def test_zombie_frozen_with_a_batch_in_flight_and_the_next_processed_does_not_fork_the_chain(
        kafka_bootstrap, tmp_path):
    """A freezes with batch N on the commit worker and N+1 processed after N's working heads, past the
    session timeout (10 s); B takes its partitions; A wakes: N commits or aborts, N+1 must not land."""
    zombie_frozen_at_hook_does_not_fork_the_chain(
        kafka_bootstrap, tmp_path, STEP, instance_id="pipe-zombie", seed=42, rate=400, backlog=BACKLOG,
        freezing=f"at {STEP}")
