"""The attp adversarial read (examples ``<pack>-attp-*`` in tests/data/examples): each example's expected
verdict and violated rules on every path that judges an event: the interpreted rules, the compiled
plan, the memo (a second event with the same facts is a memo hit) and the daemon's fact path (the
native processor auditing the event from its facts tuple), against the Python reference processor."""

from __future__ import annotations

import pytest

from auditor.policy.examples import Example
from tests.unit.policy.seedkit import (
    assert_each_path_gives_the_expected_verdict,
    assert_the_fact_path_reports_what_the_reference_reports,
    cases,
)

CASES = cases("attp")


def test_the_attp_examples_are_there():
    assert len(CASES) >= 5


@pytest.mark.parametrize(("pack_id", "ex"), CASES, ids=[ex.id for _, ex in CASES])
def test_each_path_gives_the_expected_verdict(pack_id: str, ex: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_each_path_gives_the_expected_verdict(pack_id, ex, monkeypatch)


def test_the_fact_path_reports_what_the_reference_reports():
    assert_the_fact_path_reports_what_the_reference_reports(CASES)
