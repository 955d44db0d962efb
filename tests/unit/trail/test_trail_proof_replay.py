"""Inclusion proofs, replay filters, stats and what-if re-evaluation."""

from __future__ import annotations

import base64
import io
import json

import pytest
from trailkit import flip_body_byte, make_decision, write_trail

from auditor.policy.decision import Decision, RuleRef, Verdict, Violation, ViolationKind
from auditor.trail import InclusionProof, KeyRing, ReplayFilter, iter_records, make_proof, verify_proof
from auditor.trail.replay import Stats, WhatIf, reevaluate, write_records


@pytest.fixture(scope="module")
def trail(tmp_path_factory, keys):
    path = tmp_path_factory.mktemp("t") / "trail"
    write_trail(path, keys, 300, partitions=2, checkpoint_every=40, reject_every=25,
                subjects={i: "alice@example.com" for i in range(0, 300, 10)})
    return path


@pytest.mark.parametrize("seq", [0, 1, 77, 149])
def test_proof_of_any_record_verifies_without_the_trail(trail, keys, seq):
    proof = InclusionProof.from_json(make_proof(trail, seq, "events/1").to_json())
    problems, record = verify_proof(proof, keys.verifier)
    assert problems == [] and record is not None and record.seq == seq and record.chain_id == "events/1"


def test_proof_needs_a_chain_when_there_are_several(trail):
    with pytest.raises(Exception, match="--chain"):
        make_proof(trail, 3)


def test_tampered_proofs_fail(trail, keys, tmp_path):
    good = json.loads(make_proof(trail, 20, "events/0").to_json())
    forged = flip_body_byte(base64.b64decode(good["record"]))
    bad_record = dict(good, record=base64.b64encode(forged).decode())
    bad_path = dict(good, audit_path=list(reversed(good["audit_path"])))
    lines = good["checkpoint"].split("\n")
    lines[1] = str(int(lines[1]) + 1)
    bad_cp = dict(good, checkpoint="\n".join(lines), tree_size=good["tree_size"] + 1)
    for doc, expect in ((bad_record, "modified"), (bad_path, "Merkle root"), (bad_cp, "bad signature")):
        problems, _ = verify_proof(InclusionProof.from_json(json.dumps(doc)), keys.verifier)
        assert any(expect in p for p in problems), (expect, problems)
    other = KeyRing.generate(tmp_path / "other")
    problems, _ = verify_proof(InclusionProof.from_json(json.dumps(good)), other.verifier)
    assert any("unknown key" in p for p in problems)


def test_subject_filter_finds_exactly_that_persons_records(trail, keys):
    wanted = keys.pseudonymizer("alice@example.com")
    found = list(iter_records(trail, ReplayFilter(subject=wanted)))
    assert len(found) == 30  # every 10th event (none of them a rejection)
    assert all(r.facts and r.facts.subject_pseudonym == wanted for r in found)


def test_filters_combine(trail):
    everything = list(iter_records(trail))
    assert len(everything) == 300
    flt = ReplayFilter(purpose="marketing", verdict="VIOLATION", chain="events/0")
    found = list(iter_records(trail, flt))
    expected = [r for r in everything
                if r.chain_id == "events/0" and r.facts and r.facts.purpose == "marketing"
                and r.decision and r.decision.verdict is Verdict.VIOLATION]
    assert found == expected and found
    t = everything[100].facts.occurred_at  # type: ignore[union-attr]
    window = list(iter_records(trail, ReplayFilter(since=t, until=t.replace(second=t.second + 1))))
    assert [r.event_id for r in window] == [everything[100].event_id]


def test_stats_and_output_formats(trail):
    records = list(iter_records(trail))
    stats = Stats()
    for r in records:
        stats.add(r)
    assert stats.records == 300 and stats.by_verdict["REJECTED"] == 12
    assert sum(stats.by_purpose.values()) == 288
    text = stats.render()
    assert "by violated rule:" in text and "ipasar.marketing.consent" in text
    for fmt in ("table", "jsonl", "csv"):
        out = io.StringIO()
        assert write_records(records[:5], out, fmt) == 5
    out = io.StringIO()
    write_records(records[:3], out, "jsonl")
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [r.seq for r in records[:3]]


def test_reevaluate_reports_changed_verdicts_and_why(trail):
    rule = RuleRef("v2.no-marketing", "9.9", "no marketing at all", "critical")

    def strict(event, pack):
        if event.purpose == "marketing":
            return Decision(event.event_id, Verdict.VIOLATION,
                            (Violation(rule, ViolationKind.PROHIBITED, "marketing is prohibited"),),
                            None, pack, "cd" * 32)
        return Decision(event.event_id, Verdict.ALLOW, (), rule, pack, "cd" * 32)

    records = list(iter_records(trail, ReplayFilter(purpose="marketing")))
    summary = WhatIf()
    changes = list(reevaluate(records, "v2", strict, summary))
    assert summary.judged == len(records) and summary.changed == len(changes) == len(records)
    allowed_before = [c for c in changes if c.old_verdict == "ALLOW"]
    assert allowed_before and all(c.new_verdict == "VIOLATION" and c.rules_added == ("v2.no-marketing",)
                                  for c in allowed_before)
    assert "marketing is prohibited" in str(allowed_before[0])


def test_reevaluate_under_the_same_rules_changes_nothing(trail):
    records = list(iter_records(trail))
    summary = WhatIf()
    assert list(reevaluate(records, "ipasar", lambda e, p: make_decision(e), summary)) == []
    assert summary.judged == 288 and summary.changed == 0


def test_guard_a_proof_under_another_chains_checkpoint_is_named(trail, keys):
    good = json.loads(make_proof(trail, 20, "events/0").to_json())
    other = json.loads(make_proof(trail, 20, "events/1").to_json())
    swapped = dict(good, checkpoint=other["checkpoint"], tree_size=other["tree_size"])
    problems, _ = verify_proof(InclusionProof.from_json(json.dumps(swapped)), keys.verifier)
    assert any("the checkpoint is for chain events/1, the proof claims events/0" in p for p in problems), problems
    relabelled = dict(good, chain_id="events/1")
    problems, _ = verify_proof(InclusionProof.from_json(json.dumps(relabelled)), keys.verifier)
    assert any("the record is events/0 seq 20, the proof claims events/1" in p for p in problems), problems
