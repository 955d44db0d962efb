"""Tests that kill the mutants the second mutation run found alive in auditor/policy
(docs/mutation.md, "Second run"). Each test names the function and the change it pins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.events.codec import event_from_mapping
from auditor.policy import Verdict, evaluate, load_pack
from auditor.policy.engine import evaluate_interpreted, evaluate_plain
from auditor.policy.examples import deep_merge

TINY = Path(__file__).resolve().parents[2] / "data" / "packs" / "tiny.yaml"


@pytest.fixture(scope="module")
def pack():
    return load_pack(TINY)


def make_event(**over: Any):
    base = {
        "event_id": "e-1", "occurred_at": "2026-01-01T00:00:00Z", "kind": "USE", "policy_id": "tiny",
        "source_system": "crm", "actor": {"type": "EMPLOYEE", "id": "a-1", "role": "support_agent"},
        "subject": {"id": "s-1", "age": 30}, "data_categories": ["contact"], "purpose": "marketing",
    }
    return event_from_mapping(deep_merge(base, over))


# ---------------------------------------------------------------- engine.evaluate_plain / evaluate_interpreted:
# the decision for an event with an undeclared category (each argument of the Decision mutated).

@pytest.mark.parametrize("judge", [evaluate_plain, evaluate_interpreted])
def test_the_plain_and_interpreted_paths_judge_an_undeclared_category_in_full(pack, judge):
    e = make_event(event_id="u-7", data_categories=["contact", "tattoos"], consent={"marketing": True})
    d = judge(e, pack)
    assert d == evaluate(e, pack)
    assert (d.event_id, d.verdict, d.permitted_by, d.pack_id) == ("u-7", Verdict.VIOLATION, None, "tiny")
    assert d.pack_hash == pack.pack.content_hash and d.pack_hash.startswith("sha256:")
    assert d.violated_rule_ids == ("tiny.undeclared-category",) and "tattoos" in d.violations[0].reason
