"""More members than partitions, on a real broker: one event partition, two daemons in one group.
The member given no partition is idle and ready (/readyz 200, ``auditor_partitions_assigned`` 0),
as a standby of a consumer-group daemon is expected to be, so a Kubernetes pod or a ``run
--processes N`` member serving ``http.port`` is not held unready for ever; when the member holding
the partition stops, the idle one takes it over and audits."""

from __future__ import annotations

import pytest
from daemonkit import Feeder, Fleet, TopicTail, make_setup, mixed_events, wait_until

from auditor.events.model import Event

pytestmark = pytest.mark.kafka


def test_the_member_given_no_partition_is_ready_and_takes_over_when_the_holder_stops(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False)
    with Fleet(setup) as fleet, TopicTail(kafka_bootstrap, setup.audit) as tail:
        a = fleet.start("idle-a")
        a.wait_ready(60)
        b = fleet.start("idle-b")
        b.wait_ready(90)   # before: 503 for as long as it held no partition

        def settled() -> bool:
            return sorted(d.metric("auditor_partitions_assigned") for d in (a, b)) == [0, 1]
        wait_until(settled, 60, lambda: f"one partition held, one member idle: {a.describe()}\n{b.describe()}")
        holder, idle = (a, b) if a.metric("auditor_partitions_assigned") == 1 else (b, a)
        assert idle.get("/readyz") == (200, "ready\n")
        # the gauge is set at the top of each loop, the assignment arrives inside consume(): one loop later
        wait_until(lambda: idle.metric("auditor_ready") == 1, 10, "auditor_ready 1 on the idle member")
        assert holder.get("/readyz") == (200, "ready\n")

        assert holder.terminate(within=30) == 0, holder.describe()
        wait_until(lambda: idle.metric("auditor_partitions_assigned") == 1, 60,
                   lambda: f"the idle member takes the partition over: {idle.describe()}")
        idle.wait_ready(90)
        feeder = Feeder(kafka_bootstrap, setup.events)
        feeder.send_all([e for e in mixed_events(200, seed=31) if isinstance(e, Event)][:50])
        tail.wait_for(50, 90, "audited by the member that was idle")
