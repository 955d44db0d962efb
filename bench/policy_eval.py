"""Decisions per second on one core: each seed pack, and synthetic packs of 100 and 10,000 rules.

    python bench/policy_eval.py            # full run (about three minutes of CPU time)
    python bench/policy_eval.py --quick    # fewer repetitions
    python bench/policy_eval.py --plain-ab # seed packs only: plain path, compiled tests vs interpreted

Two paths are measured on the same events. ``evaluate`` is what every caller (the daemon, `check`,
`policy test`) runs: compiled plans plus the decision memo keyed on the facts the plan's rules read;
the event list is evaluated over and over, so after the first pass every decision is a memo hit (the
"distinct" column says how many different fact keys the events have). ``plain`` is the compiled path
with the memo off (``compile_pack(pack, memo_bytes=0)``): every test runs for every event (the plan's
compiled allow test; for an event it refuses, the plan's fails test too). What the plain path keeps
across events is the plans, their compiled tests and texts: each test's reason per value of the
facts it reads, and a violation report per plan, bit set of failures and value of the facts the
failed tests' reasons read. The events repeat, so those texts are written once here; an event whose
violation facts were never seen pays for writing them (not measured here).

Events: for seed packs, the pack's example table plus the pack's own demo stream (witnesses of every permit rule plus
violating mutations, as `auditor demo` produces); for synthetic packs, events over 50 of the purposes
or spread over all of them. The ratio rate(100 rules) / rate(10,000 rules) shows that evaluation
cost does not grow with the number of rules (target < 1.5); the two packs (and both paths) are
measured taking turns, six runs each, best run counted, so the ratio compares the same minutes.
Every rate is CPU time of this process, pinned to one core. Results print as a table and go to
bench/results/policy_eval.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

from auditor.events.model import Event
from auditor.policy import CompiledPack, compile_pack, evaluate, load_pack
from auditor.policy.engine import evaluate_interpreted, evaluate_plain
from auditor.policy.examples import examples_path, load_examples
from auditor.stream.generate import stream

SEEDS = ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct"]


def pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


Judge = Callable[[Event, CompiledPack], object]


def _run(events: list[Event], pack: CompiledPack, seconds: float, judge: Judge) -> float:
    """Decisions per CPU second of one run: the event list evaluated repeatedly for about ``seconds``
    of CPU time of this process (other work on a shared machine slows it less than wall time would)."""
    n, start = 0, time.process_time()
    deadline = start + seconds
    while time.process_time() < deadline:
        for e in events:
            judge(e, pack)
        n += len(events)
    return n / (time.process_time() - start)


Case = tuple[list[Event], CompiledPack, Judge]


def rates(cases: list[Case], seconds: float, rounds: int = 3) -> list[float]:
    """The best of ``rounds`` runs of each case, the cases taking turns (each run about
    ``seconds``/``rounds``): cases compared with each other (the 100- and 10,000-rule packs) are
    measured in the same minutes, so a change in the machine's load hits both alike."""
    for events, pack, judge in cases:   # warm the plans (and the memo, for ``evaluate``)
        for e in events:
            judge(e, pack)
    best = [0.0] * len(cases)
    for _ in range(rounds):
        for i, (events, pack, judge) in enumerate(cases):
            best[i] = max(best[i], _run(events, pack, seconds / rounds, judge))
    return best


def rate(events: list[Event], pack: CompiledPack, seconds: float,
         judge: Callable[[Event, CompiledPack], object] = evaluate) -> float:
    """Best of 3 runs, each evaluating the event list repeatedly for about ``seconds``/3 of CPU time."""
    return rates([(events, pack, judge)], seconds)[0]


def measure(name: str, pack: CompiledPack, events: list[Event], seconds: float) -> dict[str, object]:
    plain = compile_pack(pack.pack, memo_bytes=0)
    fast, slow = rates([(events, pack, evaluate), (events, plain, evaluate_plain)], seconds)
    return _row(name, pack, events, fast, slow)


def _row(name: str, pack: CompiledPack, events: list[Event], fast: float, slow: float) -> dict[str, object]:
    return {"pack": name, "rules": len(pack.pack.rules), "events": len(events), "distinct": pack.memo_entries(),
            "decisions_per_s": round(fast), "plain_per_s": round(slow)}


def plain_ab(seeds: list[str], events_of: Callable[[str, CompiledPack], list[Event]], seconds: float,
             rounds: int = 3) -> None:
    """The plain path (memo off) with the compiled tests and with each test's interpreted ``holds``
    (the engine before the compiled tests), alternated in the same minutes on the same plans:
    the median of ``rounds`` alternations per pack."""
    load0 = os.getloadavg()
    print("| pack | plain/s, interpreted tests | plain/s, compiled tests | speed-up |")
    print("|---|---:|---:|---:|")
    for pid in seeds:
        pack = compile_pack(load_pack(pid).pack, memo_bytes=0)
        events = events_of(pid, pack)
        old: list[float] = []
        new: list[float] = []
        for _ in range(rounds):
            old.append(rate(events, pack, seconds, evaluate_interpreted))
            new.append(rate(events, pack, seconds, evaluate_plain))
        o, n = sorted(old)[len(old) // 2], sorted(new)[len(new) // 2]
        print(f"| {pid} | {o:,.0f} | {n:,.0f} | {n / o:.2f} |", flush=True)
    print(f"\nload average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end")


def synthetic_pack(n_rules: int, directory: Path) -> Path:
    """A language-2 pack of ``n_rules`` permits (two per purpose) plus two pack-wide constraints."""
    purposes = n_rules // 2
    lines = ["language: 2", "pack: synth", "default: {clause: '0', quote: 'default'}",
             "absent: {subject.minor: not a minor, recipient.on_our_behalf: not on our behalf}",
             "vocabulary:", "  elements: [e0, e1, e2, e3, e4]", "  categories:"]
    lines += [f"    c{i}: {{clause: '1', quote: 'c{i}', holds: [e{i}, e{i + 1}]}}" for i in range(4)]
    lines += ["  purposes:"] + [f"    p{i}: {{clause: '2', quote: 'p{i}'}}" for i in range(purposes)]
    lines += ["  recipients:", "    service_provider: {clause: '3', quote: 'sp'}", "permits:"]
    for i in range(purposes):
        lines += [f"  - {{id: synth.r{i}.use, clause: '2', quote: q, "
                  f"when: {{kinds: [USE], purposes: [p{i}]}}, "
                  f"require: [{{only_categories: [c0, c1]}}, not_opted_out]}}",
                  f"  - {{id: synth.r{i}.sp, clause: '3', quote: q, when: {{kinds: [DISCLOSURE], "
                  f"recipients: [service_provider], purposes: [p{i}]}}, require: [on_our_behalf]}}"]
    lines += ["constraints:",
              "  - {id: synth.minors, clause: '4', quote: q, when: {minor: true}, require: [{consent: guardian}]}",
              "  - {id: synth.c3-consent, clause: '5', quote: q, when: {categories: [c3]}, "
              "require: [{any_of: [{consent: third_party_sharing}, {identifiability: [AGGREGATE]}]}]}"]
    path = directory / f"synth{n_rules}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def synthetic_events(pack: CompiledPack, count: int, distinct_purposes: int | None) -> list[Event]:
    """Events over ``distinct_purposes`` purposes of the pack (None: spread over all of them)."""
    from auditor.events.codec import event_from_mapping

    purposes = sorted(pack.pack.purposes)
    if distinct_purposes is not None:
        step = max(1, len(purposes) // distinct_purposes)
        purposes = purposes[::step][:distinct_purposes]
    out = []
    for i in range(count):
        m = {"event_id": f"s{i}", "occurred_at": "2026-01-01T00:00:00Z", "kind": "USE", "policy_id": "synth",
             "source_system": "bench", "actor": {"type": "EMPLOYEE", "id": "a"}, "subject": {"id": f"u{i}", "age": 30},
             "data_categories": ["c0"], "purpose": purposes[(i * 7919) % len(purposes)]}
        if i % 3 == 0:
            m.update(kind="DISCLOSURE", recipient={"type": "service_provider", "id": "sp", "on_our_behalf": i % 2 == 0})
        if i % 10 == 0:
            m["data_categories"] = ["c3"]
        out.append(event_from_mapping(m))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--plain-ab", action="store_true", help="seed packs only: the plain path with the compiled "
                    "tests against the interpreted tests, alternated (prints a table, writes no results)")
    ap.add_argument("--packs", nargs="*", default=SEEDS, help="with --plain-ab: these seed packs only")
    args = ap.parse_args()
    seconds = 1.5 if args.quick else 6.0
    pin_one_core()

    def seed_events(pid: str, pack: CompiledPack) -> list[Event]:
        events = [ex.event for ex in load_examples(examples_path(pid))]
        demo = itertools.islice(stream([pack], seed=3, malformed_rate=0.0), 2000)
        return events + [e for e in demo if isinstance(e, Event)]

    if args.plain_ab:
        plain_ab(args.packs, seed_events, seconds)
        return
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows: list[dict[str, object]] = []
    for pid in SEEDS:
        pack = load_pack(pid)
        rows.append(measure(pid, pack, seed_events(pid, pack), seconds))
    with TemporaryDirectory() as tmp:
        synth: dict[tuple[int, str], dict[str, object]] = {}
        sizes = (100, 10_000)
        packs = {n: load_pack(synthetic_pack(n, Path(tmp))) for n in sizes}
        for mix, distinct in (("same 50 purposes", 50), ("all purposes", None)):
            # both sizes, both paths, taking turns (see rates): the ratio is measured in the same minutes
            events = {n: synthetic_events(packs[n], 2000, distinct) for n in sizes}
            plain = {n: compile_pack(packs[n].pack, memo_bytes=0) for n in sizes}
            for n in sizes:
                packs[n].clear_memo()
            cases: list[Case] = [(events[n], packs[n], evaluate) for n in sizes]
            cases += [(events[n], plain[n], evaluate_plain) for n in sizes]
            got = rates(cases, seconds, rounds=6)
            for i, n in enumerate(sizes):
                synth[(n, mix)] = _row(f"synthetic-{n}, events over {mix}", packs[n], events[n], got[i],
                                       got[len(sizes) + i])
        rows += [synth[(n, mix)] for n in sizes for mix in ("same 50 purposes", "all purposes")]

    def ratio(mix: str, col: str) -> float:
        return float(synth[(100, mix)][col]) / float(synth[(10_000, mix)][col])  # type: ignore[arg-type]

    ratios = {f"{col}, {mix}": ratio(mix, col) for col in ("decisions_per_s", "plain_per_s")
              for mix in ("same 50 purposes", "all purposes")}
    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"policy evaluation, one core ({cpu}, Python {platform.python_version()}, load average {load0:.2f} at "
          f"the start, {load:.2f} at the end)\n")
    print("| pack | rules | events | distinct fact keys | evaluate/s (memo) | plain/s (no memo) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['pack']} | {r['rules']} | {r['events']} | {r['distinct']} | {r['decisions_per_s']:,} "
              f"| {r['plain_per_s']:,} |")
    print()
    for name, value in ratios.items():
        print(f"rate(100 rules) / rate(10,000 rules), {name}: {value:.2f}  (target < 1.5)")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    result = {"rows": rows, "ratios": ratios, "load_average": load, "load_average_start": load0,
              "ratio_100_vs_10000": ratios["decisions_per_s, same 50 purposes"]}
    (out / "policy_eval.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
