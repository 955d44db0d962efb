"""The attp adversarial read (examples ``<pack>-attp-*`` in tests/data/examples): each example's expected
verdict and violated rules on every path that judges an event: the interpreted rules, the compiled
plan, the memo (a second event with the same facts is a memo hit) and the daemon's fact path (the
native processor auditing the event from its facts tuple), against the Python reference processor."""

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


def _attp(pack_id: str) -> list[Example]:
    return [ex for ex in load_examples(examples_path(pack_id)) if "-attp-" in ex.id]


CASES = [(p, ex) for p in PACKS for ex in _attp(p)]


def test_the_attp_examples_are_there():
    assert len(CASES) >= 5


@pytest.mark.parametrize(("pack_id", "ex"), CASES, ids=[ex.id for _, ex in CASES])
def test_each_path_gives_the_expected_verdict(pack_id: str, ex: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)
    plain = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
    memo = compile_pack(load_pack(pack_id).pack)
    want = (ex.expect, sorted(ex.violations))
    again = dataclasses.replace(ex.event, event_id=ex.event.event_id + "-again")
    for got in (evaluate_interpreted(ex.event, plain), evaluate_plain(ex.event, plain),
                evaluate(ex.event, memo), evaluate(again, memo)):
        assert (got.verdict.value, sorted(got.violated_rule_ids)) == want, ex.id


def test_the_fact_path_reports_what_the_reference_reports():
    values = [wire(ex.event) for _, ex in CASES]
    a, b, hits = second_pass(values)
    assert hits > 0                                  # some were audited from their facts tuple
    assert outputs(b) == outputs(a)
    flagged = {json.loads(o.value)["event_id"] for o in b.outgoing if o.topic == "violations"}
    assert flagged == {ex.event.event_id for _, ex in CASES if ex.expect == "VIOLATION"}
