"""The seed reads of the adversarial rounds (examples ``<pack>-<tag>-*`` in tests/data/examples, one tag
a round: attp, and attperm's read of attp's pack changes): each example's expected verdict and violated
rules on every path that judges an event: the interpreted rules, the compiled plan, the memo (a second
event with the same facts is a memo hit) and the daemon's fact path (the native processor auditing the
event from its facts tuple), against the Python reference processor. A new round adds its tag to TAGS."""

from __future__ import annotations

import pytest

from auditor.policy.examples import Example
from tests.unit.policy.seedkit import (
    assert_each_path_gives_the_expected_verdict,
    assert_the_fact_path_reports_what_the_reference_reports,
    cases,
)

TAGS = ["attp", "attperm"]
CASES = {tag: cases(tag) for tag in TAGS}
ALL = [case for tag in TAGS for case in CASES[tag]]


@pytest.mark.parametrize("tag", TAGS)
def test_the_examples_of_each_round_are_there(tag: str) -> None:
    assert len(CASES[tag]) >= 5


@pytest.mark.parametrize(("pack_id", "ex"), ALL, ids=[ex.id for _, ex in ALL])
def test_each_path_gives_the_expected_verdict(pack_id: str, ex: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_each_path_gives_the_expected_verdict(pack_id, ex, monkeypatch)


@pytest.mark.parametrize("tag", TAGS)
def test_the_fact_path_reports_what_the_reference_reports(tag: str) -> None:
    assert_the_fact_path_reports_what_the_reference_reports(CASES[tag])
