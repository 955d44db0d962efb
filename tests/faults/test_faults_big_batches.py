"""batch.max_events at its default (5,000, 6774dba) under faults: every fault test before this one ran
batches of 20-500. A backlog of 30,000 comes first, so batches of up to 5,000 are gathered and
processed while the previous one commits (``next_processed``); the daemon is then SIGKILLed there,
or frozen past its session (its transaction fenced and aborted, its intake rewound) while events flow
from a paced feeder; the audit topic is counted by the independent reader (faultkit) and verified:
no loss, no duplicate, every chain intact.
"""

from __future__ import annotations

import pytest
from faultkit import sigkill_at_hook_loses_and_duplicates_nothing, zombie_frozen_at_hook_does_not_fork_the_chain

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

STEP = "next_processed"
BACKLOG = 30_000
BATCH = 5000


def test_sigkill_while_a_5000_event_batch_is_processed_and_one_commits_loses_and_duplicates_nothing(
        kafka_bootstrap, tmp_path):
    sigkill_at_hook_loses_and_duplicates_nothing(
        kafka_bootstrap, tmp_path, STEP, instance_id="big-kill", seed=43, rate=600, backlog=BACKLOG,
        batch_max_events=BATCH, reaching="process a big batch while its 3rd in-flight one commits")


def test_zombie_frozen_with_a_5000_event_batch_in_flight_does_not_fork_the_chain(kafka_bootstrap, tmp_path):
    zombie_frozen_at_hook_does_not_fork_the_chain(
        kafka_bootstrap, tmp_path, "after_send_offsets", instance_id="big-zombie", seed=44, rate=300,
        backlog=BACKLOG, batch_max_events=BATCH, freezing="after sending a big batch's offsets")
