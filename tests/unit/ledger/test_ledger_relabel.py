"""Adversarial read of the ledger join (atkE): a withdrawal must not be slipped past by spelling
the purpose, recipient type or recipient another way, on the fact's side or the event's.

Each case goes through ``auditor check --ledger``'s path (a facts file in an OfflineLedger) with
thisproduct's partner marketing disclosure, which its producer says has marketing consent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditor.events.codec import event_from_mapping
from auditor.ledger.offline import OfflineLedger
from auditor.policy import load_pack
from auditor.policy.decision import Verdict, ViolationKind
from auditor.policy.examples import deep_merge

PACK = load_pack("thisproduct")
EVENT = {"event_id": "e-1", "occurred_at": "2026-02-10T14:05:00Z", "kind": "DISCLOSURE", "policy_id": "thisproduct",
         "source_system": "marketing-mailer", "actor": {"type": "SERVICE", "id": "partner-sync"},
         "subject": {"id": "u-20931", "age": 29, "region": "CN"}, "data_categories": ["contact_information"],
         "purpose": "marketing", "recipient": {"type": "business_partner", "id": "travel-partner-cn", "country": "CN"},
         "consent": {"marketing": True}}


def judged(tmp_path: Path, fact: dict[str, Any], **event: Any):
    line = {"fact_id": "cmp-1", "subject_id": "u-20931", "effective_at": "2026-01-01T00:00:00Z",
            "recorded_at": "2026-01-01T00:00:00Z", "source_system": "consent-platform", **fact}
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(line) + "\n")
    ledger = OfflineLedger(path)
    try:
        assert not ledger.report.errors
        return ledger.judge(event_from_mapping(deep_merge(EVENT, event)), PACK).decision
    finally:
        ledger.close()


def test_the_plain_spelling_is_caught(tmp_path: Path) -> None:
    d = judged(tmp_path, {"type": "CONSENT_WITHDRAWN", "scope": {"purpose": "marketing"}})
    assert d.verdict is Verdict.VIOLATION
    assert any(v.kind is ViolationKind.CLAIM_CONTRADICTED for v in d.violations)


@pytest.mark.parametrize(("scope", "event"), [
    ({"purpose": "Marketing"}, {}),                                    # the consent platform capitalises
    ({"purpose": "marketing "}, {}),                                   # a trailing blank
    ({"recipient_type": "Business_Partner"}, {}),
    ({"recipient_type": "business partner"}, {}),                      # words, as the pack language reads them
    ({"recipient_id": "travel-partner-cn"}, {"recipient": {"id": "Travel-Partner-CN"}}),   # the event's spelling
    ({"recipient_id": "travel-partner-cn"}, {"recipient": {"id": "travel-partner-cn "}}),
    ({"recipient_id": "travel_partner_cn"}, {}),
    # the withdrawal names the partner; the event calls the same partner an affiliate
    ({"recipient_type": "business_partner", "recipient_id": "travel-partner-cn"}, {"recipient": {"type": "affiliate"}}),
], ids=["purpose-case", "purpose-blank", "rtype-case", "rtype-words", "rid-event-case", "rid-event-blank",
        "rid-underscores", "rtype-relabelled"])
def test_a_withdrawal_spelt_another_way_still_ends_the_consent(tmp_path: Path, scope, event) -> None:
    d = judged(tmp_path, {"type": "CONSENT_WITHDRAWN", "scope": scope}, **event)
    assert d.verdict is Verdict.VIOLATION, d
    assert any(v.kind is ViolationKind.CLAIM_CONTRADICTED for v in d.violations)


def test_an_opt_out_spelt_another_way_still_contradicts_the_claim(tmp_path: Path) -> None:
    d = judged(tmp_path, {"type": "MARKETING_OPT_OUT", "scope": {"purpose": "MARKETING"}})
    # the opt-out also withdraws 2.C's prior consent (attp), so the partner-consent constraint fails too
    assert [v.kind for v in d.violations] == [ViolationKind.CONSTRAINT_FAILED, ViolationKind.CLAIM_CONTRADICTED]


def test_another_recipient_is_still_another_recipient(tmp_path: Path) -> None:
    """Spelling is forgiven; a different partner is not covered by a withdrawal from this one."""
    d = judged(tmp_path, {"type": "CONSENT_WITHDRAWN", "scope": {"recipient_id": "travel-partner-cn"}},
               recipient={"id": "travel-partner-my"})
    assert d.verdict is Verdict.ALLOW
    d = judged(tmp_path, {"type": "CONSENT_WITHDRAWN", "scope": {"recipient_type": "affiliate"}})
    assert d.verdict is Verdict.ALLOW


def test_events_with_ever_new_undeclared_purposes_do_not_grow_the_join(tmp_path: Path) -> None:
    """Each contradicted claim is cited with the pack's clause, looked up once per (claim, kind,
    recipient type, purpose). Before the fix the raw purpose and recipient type were the key: events
    naming ever new undeclared purposes (10,000 characters each) grew the join's citations without
    bound and the compiled pack's candidate cache by 65,536 such keys (2,000 events kept 21 MB). An
    undeclared name has the candidates of "any", so it is looked up as that."""
    import tracemalloc

    from auditor.policy import load_pack as fresh_pack

    pack = fresh_pack("ipasar")
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps({"fact_id": "f1", "subject_id": "u-1", "type": "CONSENT_WITHDRAWN",
                                "effective_at": "2026-01-01T00:00:00Z", "recorded_at": "2026-01-01T00:00:00Z",
                                "source_system": "cmp", "scope": {"purpose": "marketing"}}) + "\n")
    ledger = OfflineLedger(path)

    def event(i: int, purpose: str) -> Any:
        return event_from_mapping({
            "event_id": f"e{i}", "occurred_at": "2026-02-01T00:00:00Z", "kind": "USE", "policy_id": "ipasar",
            "source_system": "x", "actor": {"type": "EMPLOYEE", "id": "a"}, "subject": {"id": "u-1"},
            "data_categories": ["marketing_data"], "purpose": purpose, "consent": {"marketing": True}})

    try:
        cited = {v.rule for v in ledger.judge(event(0, "no-such-purpose"), pack).decision.violations
                 if v.kind is ViolationKind.CLAIM_CONTRADICTED}
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(1, 1001):
                d = ledger.judge(event(i, f"p{i}-" + "x" * 10_000), pack).decision
                assert {v.rule for v in d.violations if v.kind is ViolationKind.CLAIM_CONTRADICTED} == cited
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert kept < 2_000_000, f"the join kept {kept} bytes for 1,000 events"
        assert len(ledger.judging.join_for(pack)._cites) <= 2 and len(pack._cache) <= 2
    finally:
        ledger.close()
