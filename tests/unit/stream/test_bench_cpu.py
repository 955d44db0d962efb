"""bench/stream.py's CPU accounting per phase: the measured process(es), the broker JVM and the
rest of the machine per event, and the machine's iowait and steal, from /proc (what tells a slow
run from a fast one)."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from bench.stream import (
    CpuMark,
    cpu_line,
    cpu_per_event,
    cpu_rows,
    parse_stat,
    probed,
    report,
    round_ratios,
    speed_probe,
    summarize,
    verdicts,
)

STAT = """cpu  1666129 3138050 547496 3579861 9585 0 37592 9870 0 0
cpu0 833064 1569025 273748 1789930 4792 0 18796 4935 0 0
intr 1 2 3
"""


def mark(user: int, system: int, idle: int, iowait: int, steal: int, broker: float | None,
         measured: float) -> CpuMark:
    stat = {"user": user, "nice": 0, "system": system, "idle": idle, "iowait": iowait, "irq": 0,
            "softirq": 0, "steal": steal}
    return CpuMark(stat, broker, measured)


def test_parse_stat_reads_the_all_cpus_line() -> None:
    assert parse_stat(STAT) == {"user": 1666129, "nice": 3138050, "system": 547496, "idle": 3579861,
                                "iowait": 9585, "irq": 0, "softirq": 37592, "steal": 9870}


def test_parse_stat_refuses_what_is_not_proc_stat() -> None:
    with pytest.raises(ValueError, match="not /proc/stat"):
        parse_stat("cpu0 1 2 3\n")


def test_cpu_per_event_splits_the_machine_into_measured_broker_and_rest() -> None:
    # 2 CPUs, 100 ticks/s, one second: 150 user + 20 system busy, 10 idle, 10 iowait, 10 steal
    a = mark(1000, 1000, 1000, 1000, 1000, broker=7.0, measured=3.0)
    b = mark(1150, 1020, 1010, 1010, 1010, broker=7.5, measured=4.0)
    c = cpu_per_event(a, b, 100_000, hz=100)
    assert c["measured_us"] == pytest.approx(10.0)
    assert c["broker_us"] == pytest.approx(5.0)
    assert c["rest_us"] == pytest.approx(2.0)  # 1.7 s busy - 1.0 measured - 0.5 broker
    assert c["busy_share"] == pytest.approx(0.85)
    assert c["iowait_share"] == pytest.approx(0.05)
    assert c["steal_share"] == pytest.approx(0.05)
    line = cpu_line(c, "daemon")
    assert line == ("daemon 10.0 us, broker JVM 5.0 us, rest of the machine 2.0 us "
                    "(machine 85% busy, iowait 5.0%, steal 5.0%)")


def test_without_the_brokers_pid_the_broker_is_in_the_rest() -> None:
    a = mark(1000, 1000, 1000, 1000, 1000, broker=None, measured=3.0)
    b = mark(1150, 1020, 1030, 1000, 1000, broker=None, measured=4.0)
    c = cpu_per_event(a, b, 100_000, hz=100)
    assert "broker_us" not in c
    assert c["rest_us"] == pytest.approx(7.0)
    assert "broker JVM" not in cpu_line(c, "daemon")


def test_a_mark_reads_this_process_and_the_machine() -> None:
    a = CpuMark.now(os.getpid(), [os.getpid()])
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    b = CpuMark.now(os.getpid(), [os.getpid()])
    c = cpu_per_event(a, b, 1)
    assert 0.2e6 <= c["measured_us"] <= 2e6
    assert c["broker_us"] == pytest.approx(c["measured_us"], abs=0.05e6)  # the same process, read twice
    assert sum(b.stat.values()) > sum(a.stat.values())


def test_the_reference_loop_is_timed_in_cpu_nanoseconds_per_iteration() -> None:
    ns = speed_probe(rounds=3, n=20_000)
    assert 1 < ns < 5_000  # ~50 ns on the project's machine, loaded


def test_a_phase_gets_the_probe_before_and_after_it_and_the_row_shows_them() -> None:
    c = {"measured_us": 10.0, "rest_us": 1.0, "busy_share": 0.9, "iowait_share": 0.0, "steal_share": 0.0}
    phase = probed({"cpu": c}, 41.0)
    before, after = phase["cpu"]["probe_ns"]
    assert before == 41.0 and 1 < after < 5_000
    assert cpu_line({**c, "probe_ns": [41.2, 43.6]}, "daemon").endswith(
        "steal 0.0%; reference loop 41 -> 44 ns/iteration)")
    assert cpu_line({**c, "probe_ns": [41.2, 43.6], "probe_during_ns": [40.0, 95.4, 50.0]}, "daemon").endswith(
        "steal 0.0%; reference loop 41 -> 44 (during: mean 62, 40-95) ns/iteration)")
    bare = probed({"steady_eps": 1.0}, 41.0, [42.0, 43.0])  # no cpu dict (the paced phase): in the phase
    assert bare["probe_ns"][0] == 41.0 and bare["probe_during_ns"] == [42.0, 43.0]


def result(cpu: bool) -> dict[str, Any]:
    c = {"measured_us": 10.0, "broker_us": 5.0, "rest_us": 1.0, "busy_share": 0.9, "iowait_share": 0.0,
         "steal_share": 0.01}
    extra = {"cpu": c} if cpu else {}
    daemon = {"steady_eps": 90_000.0, "wall_eps": 80_000.0, "startup_s": 1.0, "rss_after_bytes": 2**27,
              "rss_peak_bytes": 2**27, "transactions": {"commit": 200.0, "abort": 0.0}, "processes": 1,
              "sigterm_exit": 0, "sigterm_seconds": 0.5, **extra}
    lat = {"rate_sent_eps": 45_000.0, "seconds": 25.0, "observed_p50_s": 0.05, "observed_p99_s": 0.12,
           "sampled": 1000, "to_produced_p50_s": 0.03, "to_produced_p99_s": 0.1, "produced_to_visible_p50_s": 0.02,
           "produced_to_visible_p99_s": 0.05, "bench_cpu_share": 0.2, "daemon_cpu_share": 0.5,
           "machine_busy_share": 0.7, "metric_p50_s": 0.05, "metric_p99_s": 0.2}
    rnd = {"round": 1, "order": ["peer", "daemon", "ceiling"], "daemon": daemon,
           "ceiling": {"steady_eps": 95_000.0, "wall_eps": 90_000.0, **extra},
           "peer": {"steady_eps": 45_000.0, "wall_eps": 40_000.0, **extra}}
    r: dict[str, Any] = {"events": 1_000_000, "partitions": 3, "cpus": 2, "load_before": 0.5,
                         "produce_eps": 200_000.0, "rounds": [round_ratios(rnd)], "daemons": [], "latency": lat,
                         "rounds_daemon": "--processes 1, native on"}
    r["summary"] = summarize(r["rounds"])
    r["verdicts"] = verdicts(r)
    return r


def test_the_report_keeps_its_lines_and_adds_the_cpu_summary_and_one_cpu_row_per_phase() -> None:
    before = report(result(cpu=False)).splitlines()
    after = report(result(cpu=True)).splitlines()
    summary = after.index("CPU per event, median of 1 rounds (the phase's own process): (a) ceiling 10.0 + broker "
                          "JVM 5.0 us, (p) Quix 10.0 + broker JVM 5.0 us, (b) daemon 10.0 + broker JVM 5.0 us")
    assert after[summary - 1] == "" and summary < after.index("| measure | value |")
    del after[summary - 1: summary + 1]  # the one line under the rounds table
    assert after[: len(before)] == before
    added = after[len(before):]
    assert [row.split(" | ")[0] for row in added] == [
        "| CPU per event, round 1 (p) Quix", "| CPU per event, round 1 (b) daemon",
        "| CPU per event, round 1 (a) ceiling"]
    assert "broker JVM 5.0 us" in added[1] and "steal 1.0%" in added[1]
    assert cpu_rows(result(cpu=False)) == []
