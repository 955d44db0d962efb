"""The seed read of a round of adversarial examples (``<pack>-<tag>-*`` in tests/data/examples), shared
by test_seed_reads.py (one round a tag): each example's expected verdict and
violated rules on every path that judges an event (the interpreted rules, the compiled plan, the memo:
a second event with the same facts is a memo hit), and the daemon's fact path (the native processor
auditing the events from their facts tuples) against the Python reference processor.

The checks assert here: tests/unit/policy/conftest.py registers this module for pytest's assertion
rewriting, so a failure reads as it would in the test module."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from auditor.policy import engine, load_pack
from auditor.policy.engine import compile_pack, evaluate, evaluate_interpreted, evaluate_plain
from auditor.policy.examples import Example, examples_path, load_examples

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stream"))
from streamkit import wire  # noqa: E402
from test_factpath_attacks import second_pass  # noqa: E402
from test_stream_factseal import outputs  # noqa: E402

PACKS = ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct"]


def cases(tag: str) -> list[tuple[str, Example]]:
    """(pack id, example) of every example of every pack whose id holds ``-<tag>-``."""
    return [(p, ex) for p in PACKS for ex in load_examples(examples_path(p)) if f"-{tag}-" in ex.id]


def assert_each_path_gives_the_expected_verdict(pack_id: str, ex: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)
    plain = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
    memo = compile_pack(load_pack(pack_id).pack)
    want = (ex.expect, sorted(ex.violations))
    again = dataclasses.replace(ex.event, event_id=ex.event.event_id + "-again")
    for got in (evaluate_interpreted(ex.event, plain), evaluate_plain(ex.event, plain),
                evaluate(ex.event, memo), evaluate(again, memo)):
        assert (got.verdict.value, sorted(got.violated_rule_ids)) == want, ex.id


def assert_the_fact_path_reports_what_the_reference_reports(cases: list[tuple[str, Example]]) -> None:
    a, b, hits = second_pass([wire(ex.event) for _, ex in cases])
    assert hits > 0                                  # some were audited from their facts tuple
    assert outputs(b) == outputs(a)
    flagged = {json.loads(o.value)["event_id"] for o in b.outgoing if o.topic == "violations"}
    assert flagged == {ex.event.event_id for _, ex in cases if ex.expect == "VIOLATION"}
