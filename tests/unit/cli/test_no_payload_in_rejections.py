"""Rejections never repeat payload values: not in check's output, not in the trail (README promise)."""

from __future__ import annotations

import json
from pathlib import Path

from clikit import run_cli

DATA = Path(__file__).resolve().parents[2] / "data"
GOOD = json.loads(next(line for line in (DATA / "events" / "ipasar.jsonl").read_text().splitlines()
                       if line.startswith("{")))
SECRET = "Zq9SECRETzq9"


def _bad_lines() -> list[str]:
    def with_(**changes: object) -> str:
        return json.dumps({**GOOD, **changes})

    return [
        with_(kind=f"TELEPORT-{SECRET}"),
        with_(policy_id=f"pol-{SECRET}"),
        with_(occurred_at=f"2026-99-{SECRET}"),
        with_(actor={**GOOD["actor"], "type": f"ROBOT-{SECRET}"}),
        with_(subject={**GOOD["subject"], "age": f"age-{SECRET}"}),
        with_(identifiability=f"ID-{SECRET}"),
        with_(data_categories=f"cats-{SECRET}"),
        with_(consent={"marketing": f"yes-{SECRET}"}),
        with_(transfer={"cross_border": True, "safeguard": f"SG-{SECRET}"}),
        with_(legal_request={"type": f"LR-{SECRET}"}),
        json.dumps({**GOOD, "subject": {"id": f"u-{SECRET}", "age": -4}}),
        "{" + f'"event_id": "{SECRET}", ' + "broken",
        json.dumps([SECRET]),
    ]


def test_no_rejection_message_repeats_a_payload_value(tmp_path):
    events = tmp_path / "bad.jsonl"
    events.write_text("\n".join(_bad_lines()) + "\n")
    r = run_cli("keys", "generate", "--out", tmp_path / "keys")
    assert r.code == 0, r.err
    r = run_cli("check", events, "--trail", tmp_path / "trail", "--keys", tmp_path / "keys", "--format", "jsonl",
                timeout=120)
    assert r.code == 0, r.err[-2000:]
    errors = [json.loads(line) for line in r.out.splitlines()]
    assert len(errors) == len(_bad_lines()) and all("error" in e for e in errors), r.out
    assert SECRET not in r.out and SECRET not in r.err, [e["error"] for e in errors if SECRET in e["error"]]
    r = run_cli("replay", tmp_path / "trail", "--verdict", "REJECTED", "--format", "jsonl", timeout=120)
    assert r.code == 0, r.err[-2000:]
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert len(rows) == len(_bad_lines())
    assert SECRET not in r.out, [row["rejection"]["message"] for row in rows if SECRET in row["rejection"]["message"]]
