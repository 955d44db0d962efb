"""attperm: attp's thisproduct reading "an opt-out of marketing withdraws 2.C's prior consent" (cbe2100) judged
against the ledger, where consent and opt-out are facts with times (``auditor check --ledger``'s path).

Seed 004, 2.C: "Or share information with partners so that they can send you information about their products
and services (the latter requires your prior consent)." A consent given after an opt-out is the user's latest word
and the prior consent 2.C asks for, but the ledger answered "opted out?" from the old opt-out: the event's claim of
no opt-out was contradicted (the join's claims step) and attp's constraint failed. Consent and opt-out were separate
families each answered by its own latest fact; the lead made a marketing-scoped consent answer the opt-out question
too (auditor/ledger/asof.py, docs/ledger.md "one conversation"), so this test, xfail(strict) when attperm wrote it,
now passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auditor.events.codec import event_from_mapping
from auditor.ledger.offline import OfflineLedger
from auditor.policy import load_pack
from auditor.policy.decision import Verdict

EVENT = {"event_id": "e-1", "occurred_at": "2026-04-10T14:05:00Z", "kind": "DISCLOSURE", "policy_id": "thisproduct",
         "source_system": "marketing-mailer", "actor": {"type": "SERVICE", "id": "partner-sync"},
         "subject": {"id": "u-20931", "age": 29, "region": "CN"}, "data_categories": ["contact_information"],
         "purpose": "marketing", "recipient": {"type": "business_partner", "id": "travel-partner-cn", "country": "CN"}}


def _fact(fid: str, kind: str, when: str) -> dict[str, Any]:
    return {"fact_id": fid, "subject_id": "u-20931", "type": kind, "effective_at": when, "recorded_at": when,
            "source_system": "consent-platform", "scope": {"purpose": "marketing"}}


def judged(tmp_path: Path, *facts: dict[str, Any]) -> Verdict:
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in facts))
    ledger = OfflineLedger(path)
    try:
        assert not ledger.report.errors
        return ledger.judge(event_from_mapping(EVENT), load_pack("thisproduct")).decision.verdict
    finally:
        ledger.close()


def test_the_consent_alone_allows_the_partner_offers(tmp_path: Path) -> None:
    assert judged(tmp_path, _fact("c", "CONSENT_GRANTED", "2026-03-10T00:00:00Z")) is Verdict.ALLOW


def test_a_consent_given_after_the_opt_out_is_the_prior_consent_2c_asks_for(tmp_path: Path) -> None:
    assert judged(tmp_path, _fact("o", "MARKETING_OPT_OUT", "2026-01-10T00:00:00Z"),
                  _fact("c", "CONSENT_GRANTED", "2026-03-10T00:00:00Z")) is Verdict.ALLOW
