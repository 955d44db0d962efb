"""bench/stream.py's rounds: the phases alternate on the same backlog, each ratio is of phases run
back to back, the median and the min over the rounds are reported, a phase the machine ran slower
is flagged (not dropped), and the "Must show" lines say met / not met with the figures."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bench.stream import (
    ProbeSampler,
    cpu_summary,
    flag_phases,
    loop_cell,
    loop_text,
    ratio_verdict,
    readings,
    report,
    round_orders,
    round_ratios,
    rounds_table,
    slow_flag,
    spread,
    summarize,
    verdicts,
)


def test_the_daemon_runs_between_the_phases_it_is_compared_with_and_the_others_swap_every_round() -> None:
    assert round_orders(3, with_peer=True) == [("peer", "daemon", "ceiling"), ("ceiling", "daemon", "peer"),
                                               ("peer", "daemon", "ceiling")]
    assert round_orders(2, with_peer=False) == [("ceiling", "daemon"), ("daemon", "ceiling")]
    with pytest.raises(ValueError):
        round_orders(0, with_peer=True)


def test_readings_are_before_and_after_then_during() -> None:
    assert readings({"cpu": {"probe_ns": [52.0, 95.0], "probe_during_ns": [60.0, 90.0]}}) == ([52, 95], [60, 90])
    assert readings({"probe_ns": [50.0, 51.0]}) == ([50, 51], [])  # the latency phase has no cpu dict
    assert readings({"steady_eps": 1.0}) == ([], [])


def test_a_phase_more_than_ten_percent_over_the_runs_fastest_reading_is_flagged() -> None:
    assert slow_flag([52.0, 57.0], [], fastest=52.0) is None  # +9.6%
    assert slow_flag([52.0, 95.0], [], fastest=52.0) == (
        "reference loop 52 -> 95 ns/iteration: after 95 is +83% over the run's fastest reading between phases, 52")
    # slowed throughout: the loop did not move during the phase, but the machine was slower than at its best
    assert slow_flag([95.0, 99.0], [], fastest=52.0) is not None
    assert slow_flag([], [], fastest=52.0) is None
    assert slow_flag([60.0, 60.0], [], fastest=52.0, tolerance=0.2) is None


def test_a_slowdown_inside_the_phase_is_flagged_by_the_mean_of_the_readings_during_it() -> None:
    # it came and went: before and after are fast, half the readings during it slow
    assert slow_flag([52.0, 53.0], [52.0, 97.0, 95.0, 53.0], fastest=52.0, fastest_during=55.0) == (
        "reference loop 52 -> 53 (during: mean 74, 52-97) ns/iteration: mean during 74 is +35% over the run's "
        "lowest mean during a phase, 55")
    # one noisy reading among many does not flag a phase
    assert slow_flag([52.0, 53.0], [55.0] * 19 + [97.0], fastest=52.0, fastest_during=55.0) is None
    # readings during a phase are compared with their own kind: +8% over the idle probes, none over 55
    assert slow_flag([52.0, 53.0], [56.0, 57.0, 56.0], fastest=52.0, fastest_during=55.0) is None


def test_a_probe_at_the_boundary_does_not_overrule_the_readings_during_the_phase() -> None:
    assert slow_flag([52.0, 101.0], [55.0, 56.0, 54.0, 55.0], fastest=52.0, fastest_during=55.0) is None
    # too few readings during it (a short phase): the probes around it decide, the worst one named
    assert slow_flag([60.0, 70.0], [80.0], fastest=52.0, fastest_during=55.0) == (
        "reference loop 60 -> 70 (during: mean 80, 80-80) ns/iteration: after 70 is +35% over the run's fastest "
        "reading between phases, 52")
    assert slow_flag([70.0, 60.0], [], fastest=52.0).startswith("reference loop 70 -> 60 ns/iteration: before 70")


def test_loop_text_shows_before_after_and_the_mean_and_range_during() -> None:
    assert loop_text([52.0, 53.4], []) == "52 -> 53"
    assert loop_text([52.0, 54.0], [60.0, 95.0]) == "52 -> 54 (during: mean 78, 60-95)"
    assert loop_text([], []) == ""
    assert loop_cell([52.0, 54.0], [60.0, 95.0]) == "52 -> 54 (78)"
    assert loop_cell([], []) == "-"


def test_the_sampler_reads_the_loop_while_the_phases_run_and_stops() -> None:
    sampler = ProbeSampler(interval=0.05)
    try:
        t0 = time.monotonic()
        deadline = t0 + 60
        while len(sampler.between(t0, time.monotonic())) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = sampler.between(t0, time.monotonic())
        assert len(got) >= 3 and all(1 < ns < 5_000 for ns in got)
        assert sampler.between(t0 - 3600, t0 - 1800) == []
    finally:
        sampler.close()
    assert not sampler._proc.is_alive()


def test_flags_are_against_the_fastest_before_or_after_reading_and_the_lowest_mean_during() -> None:
    fast = {"cpu": {"probe_ns": [52.0, 53.0], "probe_during_ns": [40.0, 70.0, 55.0]}}  # mean during 55
    slow = {"cpu": {"probe_ns": [52.0, 95.0], "probe_during_ns": [57.0, 50.0]}}  # 2 during: judged by its probes
    inside = {"cpu": {"probe_ns": [52.0, 52.0], "probe_during_ns": [60.0, 62.0, 61.0]}}  # +11% over 55
    later = {"probe_ns": [95.0, 99.0]}
    flag_phases([fast, slow, inside, later])
    assert fast["flag"] is None
    assert "52 -> 95" in slow["flag"] and "95 -> 99" in later["flag"]
    assert later["flag"].endswith("fastest reading between phases, 52")  # the sampler's 40 is not a baseline
    assert inside["flag"].endswith("mean during 61 is +11% over the run's lowest mean during a phase, 55")
    # 2 readings during a phase do not make a baseline either (slow's mean 53.5 would)


def test_spread_keeps_every_value_and_gives_median_and_min() -> None:
    assert spread([1.92, 2.36, 2.05]) == {"n": 3, "median": 2.05, "min": 1.92, "max": 2.36,
                                          "values": [1.92, 2.36, 2.05]}
    assert spread([2.0, 3.0])["median"] == 2.5
    assert spread([]) == {"n": 0, "values": []}


def phase(eps: float, probe: tuple[float, float] = (52.0, 53.0)) -> dict[str, Any]:
    cpu = {"measured_us": 10.0, "rest_us": 1.0, "busy_share": 0.9, "iowait_share": 0.0, "steal_share": 0.0,
           "probe_ns": list(probe)}
    return {"steady_eps": eps, "wall_eps": eps * 0.9, "cpu": cpu}


def rnd(i: int, ceiling: float, quix: float, daemon: float, slow: str | None = None) -> dict[str, Any]:
    x = {"round": i, "order": list(round_orders(i, True)[-1])}
    for k, eps in (("ceiling", ceiling), ("peer", quix), ("daemon", daemon)):
        x[k] = phase(eps, (52.0, 95.0) if k == slow else (52.0, 53.0))
    return round_ratios(x)


def test_each_round_has_its_own_ratios() -> None:
    x = rnd(1, 88_000.0, 45_000.0, 90_000.0)
    assert x["ratio_ceiling"] == pytest.approx(90 / 88)
    assert x["ratio_peer"] == pytest.approx(2.0)
    no_peer = round_ratios({"round": 1, "ceiling": phase(80_000.0), "daemon": phase(90_000.0)})
    assert "ratio_peer" not in no_peer


def test_the_summary_gives_each_rate_and_ratio_over_the_rounds_and_the_unflagged_ones_apart() -> None:
    rounds = [rnd(1, 88_000.0, 45_000.0, 90_000.0), rnd(2, 88_000.0, 40_000.0, 100_000.0, slow="peer"),
              rnd(3, 90_000.0, 50_000.0, 95_000.0)]
    flag_phases([r[k] for r in rounds for k in ("ceiling", "peer", "daemon")])
    s = summarize(rounds)
    assert s["daemon_eps"]["median"] == 95_000.0 and s["peer_eps"]["min"] == 40_000.0
    assert s["ratio_peer"]["values"] == pytest.approx([2.0, 2.5, 1.9])
    assert s["ratio_peer"]["median"] == pytest.approx(2.0)
    assert s["ratio_peer"]["unflagged"]["values"] == pytest.approx([2.0, 1.9])  # round 2's Quix was flagged
    assert s["ratio_ceiling"]["unflagged"]["n"] == 3  # a flagged Quix phase does not touch daemon/ceiling
    rounds[0]["daemon"]["flag"] = "slow"  # a flagged daemon phase puts both of its pairs aside
    s = summarize(rounds)
    assert s["ratio_ceiling"]["unflagged"]["n"] == 2 and s["ratio_peer"]["unflagged"]["n"] == 1


def test_a_ratio_verdict_is_by_the_median_and_says_how_many_pairs_met_it_alone() -> None:
    s = spread([1.92, 2.36, 2.05])
    assert ratio_verdict("daemon >= 2x Quix Streams", 2.0, s, []) == (
        "daemon >= 2x Quix Streams: MET, median 2.05 of 3 back-to-back pairs (1.92, 2.36, 2.05; min 1.92); "
        "2 of 3 pairs >= 2 alone")
    low = spread([1.92, 1.97, 2.27])
    assert ratio_verdict("daemon >= 2x Quix Streams", 2.0, low, []).startswith(
        "daemon >= 2x Quix Streams: NOT MET, median 1.97")
    assert ratio_verdict("x", 2.0, {"n": 0, "values": []}, []) == "x: NOT MEASURED"


def test_a_flagged_pair_is_named_and_the_median_without_it_shown_beside() -> None:
    s = {**spread([1.9, 2.5, 2.1]), "unflagged": spread([1.9, 2.1])}
    line = ratio_verdict("daemon >= 2x Quix Streams", 2.0, s, [2])
    assert "MET, median 2.10 of 3" in line
    assert line.endswith("pair(s) 2 flagged (a phase ran on a slower machine): median of the 2 unflagged 2.00 (met)")
    below = ratio_verdict("r", 2.0, {**spread([1.9, 2.5, 2.1]), "unflagged": spread([1.9, 2.04])}, [2])
    assert below.endswith("median of the 2 unflagged 1.97 (not met)")
    none_clean = ratio_verdict("r", 2.0, {**spread([2.5]), "unflagged": spread([])}, [1])
    assert none_clean.endswith("no pair unflagged: the verdict rests on phases the machine ran slower")


def result(rounds: list[dict[str, Any]], p99: float = 0.149, p2: float = 119_581.0) -> dict[str, Any]:
    daemon2 = {"steady_eps": p2, "wall_eps": p2, "startup_s": 1.0, "rss_after_bytes": 2**28,
               "rss_peak_bytes": 2**28, "transactions": {"commit": 200.0, "abort": 0.0}, "processes": 2,
               "native": True, "sigterm_exit": 0, "sigterm_seconds": 1.0,
               "cpu": {"measured_us": 10.0, "rest_us": 1.0, "busy_share": 0.9, "iowait_share": 0.0,
                       "steal_share": 0.0, "probe_ns": [52.0, 53.0]}}
    for x in rounds:
        x["daemon"].update({k: v for k, v in daemon2.items() if k not in ("steady_eps", "wall_eps", "cpu",
                                                                          "processes")}, processes=1)
    lat = {"rate_sent_eps": 45_000.0, "seconds": 25.0, "observed_p50_s": 0.06, "observed_p99_s": p99,
           "sampled": 1000, "to_produced_p50_s": 0.03, "to_produced_p99_s": 0.1, "produced_to_visible_p50_s": 0.02,
           "produced_to_visible_p99_s": 0.05, "bench_cpu_share": 0.2, "daemon_cpu_share": 0.5,
           "machine_busy_share": 0.7, "metric_p50_s": 0.05, "metric_p99_s": 0.2, "probe_ns": [52.0, 52.0]}
    r: dict[str, Any] = {"events": 1_000_000, "partitions": 3, "cpus": 2, "load_before": 0.5, "load_after": 1.0,
                         "produce_eps": 200_000.0, "rounds": rounds, "latency": lat, "daemons": [daemon2],
                         "rounds_daemon": "--processes 1, native on"}
    flag_phases([*(x[k] for x in rounds for k in ("ceiling", "peer", "daemon") if k in x), lat, daemon2])
    r["summary"] = summarize(rounds)
    r["verdicts"] = verdicts(r)
    return r


def test_the_verdicts_cover_each_must_show_line_with_the_figures() -> None:
    r = result([rnd(1, 88_000.0, 45_000.0, 90_000.0), rnd(2, 88_000.0, 40_000.0, 100_000.0),
                rnd(3, 90_000.0, 50_000.0, 95_000.0)])
    quix, ceiling, p99, p2 = r["verdicts"]
    assert quix.startswith("daemon >= 2x Quix Streams: MET, median 2.00 of 3")
    assert ceiling.startswith("daemon >= 0.8x the raw ceiling: MET, median 1.06 of 3")
    assert p99 == ("p99 event -> visible audit record < 250 ms at half rate: MET, p99 149 ms (p50 60) at "
                   "45,000 events/s = 0.5 x the median daemon rate 95,000/s; one paced phase of 25 s")
    assert p2 == ("--processes 2, native on vs the rounds' daemon (--processes 1, native on): reported, "
                  "119,581 events/s in one run = 1.26x their median 95,000, 2.66x the median Quix")


def test_a_p99_over_250_ms_is_not_met_and_a_slow_paced_phase_is_flagged() -> None:
    r = result([rnd(1, 88_000.0, 45_000.0, 90_000.0)], p99=0.274)
    r["latency"]["probe_ns"] = [52.0, 70.0]
    flag_phases([r["rounds"][0]["daemon"], r["latency"]])
    p99 = verdicts(r)[2]
    assert p99.startswith("p99 event -> visible audit record < 250 ms at half rate: NOT MET, p99 274 ms")
    assert p99.endswith("flagged: reference loop 52 -> 70 ns/iteration: after 70 is +35% over the run's fastest "
                        "reading between phases, 52")


def test_without_the_peer_its_line_says_not_measured() -> None:
    x = round_ratios({"round": 1, "order": ["ceiling", "daemon"], "ceiling": phase(80_000.0),
                      "daemon": phase(90_000.0)})
    r = result([x])
    assert r["verdicts"][0] == "daemon >= 2x Quix Streams: NOT MEASURED (--no-peer)"
    assert "x the median Quix" not in r["verdicts"][3]
    assert rounds_table(r)[0] == ("| round | order | (a) ceiling | (b) daemon | daemon / ceiling | "
                                  "reference loop ns: before -> after (mean during), a / b |")


def test_the_report_puts_the_verdicts_first_then_every_round_with_its_flags() -> None:
    r = result([rnd(1, 88_000.0, 45_000.0, 90_000.0), rnd(2, 88_000.0, 40_000.0, 100_000.0, slow="peer")])
    text = report(r).splitlines()
    assert text[0] == "Must show (issue 14), this run:"
    assert text[1:5] == [f"- {v}" for v in r["verdicts"]]
    table = rounds_table(r)
    assert table[2] == "| 1 | p b a | 88,000 | 45,000 | 90,000 | 1.02 | 2.00 | 52 -> 53 / 52 -> 53 / 52 -> 53 |"
    assert table[3] == ("| 2 | a b p | 88,000 | 40,000 (!) | 100,000 | 1.14 | 2.50 | "
                        "52 -> 53 / 52 -> 95 / 52 -> 53 |")
    assert table[4] == "| median of 2 |  | 88,000 | 42,500 | 95,000 | 1.08 | 2.25 |  |"
    assert table[5] == "| min of 2 |  | 88,000 | 40,000 | 90,000 | 1.02 | 2.00 |  |"
    assert ("(!) round 2 (p) Quix: reference loop 52 -> 95 ns/iteration: after 95 is +83% over the run's fastest "
            "reading between phases, 52") in text
    cpu = [line.split(" | ")[0] for line in text if line.startswith("| CPU per event")]
    assert cpu == ["| CPU per event, round 1 (p) Quix", "| CPU per event, round 1 (b) daemon",
                   "| CPU per event, round 1 (a) ceiling", "| CPU per event, round 2 (a) ceiling",
                   "| CPU per event, round 2 (b) daemon", "| CPU per event, round 2 (p) Quix",
                   "| CPU per event, (b) daemon --processes 2, native on"]


def test_the_cpu_summary_gives_each_phases_own_and_the_brokers_cpu_per_event_over_the_rounds() -> None:
    rounds = [rnd(1, 88_000.0, 45_000.0, 90_000.0), rnd(2, 88_000.0, 40_000.0, 100_000.0),
              rnd(3, 90_000.0, 50_000.0, 95_000.0)]
    for x, (own, broker) in zip(rounds, [(9.0, 3.0), (12.0, 4.5), (10.0, 2.0)], strict=True):
        x["daemon"]["cpu"].update(measured_us=own, broker_us=broker)
        x["peer"]["cpu"].update(measured_us=own * 2.5)
    assert cpu_summary(rounds) == ("CPU per event, median of 3 rounds (the phase's own process): (a) ceiling 10.0 us, "
                                   "(p) Quix 25.0 us, (b) daemon 10.0 + broker JVM 3.0 us")
    assert cpu_summary([{"round": 1, "ceiling": {"steady_eps": 1.0}, "daemon": {"steady_eps": 1.0}}]) is None
    again = rerun(4, 2, 88_000.0, 40_000.0, 100_000.0)
    again["daemon"]["cpu"].update(measured_us=30.0, broker_us=30.0)
    assert cpu_summary([*rounds, again]) == cpu_summary(rounds)  # a re-run is not one of the rounds


def rerun(i: int, of: int, ceiling: float, quix: float, daemon: float) -> dict[str, Any]:
    x = rnd(of, ceiling, quix, daemon)
    return {**x, "round": i, "rerun_of": of}


def test_a_rerun_is_kept_out_of_the_verdicts_median_and_joins_the_unflagged_one() -> None:
    rounds = [rnd(1, 88_000.0, 45_000.0, 90_000.0), rnd(2, 88_000.0, 40_000.0, 100_000.0, slow="peer"),
              rnd(3, 90_000.0, 50_000.0, 95_000.0), rerun(4, 2, 88_000.0, 48_000.0, 96_000.0)]
    flag_phases([r[k] for r in rounds for k in ("ceiling", "peer", "daemon")])
    s = summarize(rounds)
    assert s["ratio_peer"]["values"] == pytest.approx([2.0, 2.5, 1.9])  # the first three rounds only
    assert s["daemon_eps"]["n"] == 3
    assert s["ratio_peer"]["unflagged"]["values"] == pytest.approx([2.0, 1.9, 2.0])
    assert s["ratio_peer"]["unflagged"]["reruns"] == 1
    r = result(rounds)
    assert r["verdicts"][0].endswith("pair(s) 2 flagged (a phase ran on a slower machine): median of the 3 "
                                     "unflagged 2.00 (met, 1 of them re-run)")
    table = rounds_table(r)
    assert table[5].startswith("| 4 (re-run of 2) | a b p | 88,000 | 48,000 | 96,000 |")
    assert table[6].startswith("| median of 3 (re-runs left out) |  | 88,000 | 45,000 | 95,000 |")
    # a re-run slowed again is not one of the pairs the verdict rests on
    again = rerun(4, 2, 88_000.0, 48_000.0, 96_000.0)
    again["daemon"]["cpu"]["probe_ns"] = [52.0, 99.0]
    r = result([*rounds[:3], again])
    assert "pair(s) 2 flagged" in r["verdicts"][0] and "median of the 2 unflagged" in r["verdicts"][0]
