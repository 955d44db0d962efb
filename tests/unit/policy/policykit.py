"""The small hand-written pack (tests/data/packs/tiny.yaml) and an event builder for it, shared by
test_engine.py and test_policy_mutation_kills.py (the ``pack`` fixture is in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditor.events.codec import event_from_mapping
from auditor.events.model import Event
from auditor.policy.examples import deep_merge

TINY = Path(__file__).resolve().parents[2] / "data" / "packs" / "tiny.yaml"


def make_event(**over: Any) -> Event:
    base = {
        "event_id": "e-1", "occurred_at": "2026-01-01T00:00:00Z", "kind": "USE", "policy_id": "tiny",
        "source_system": "crm", "actor": {"type": "EMPLOYEE", "id": "a-1", "role": "support_agent"},
        "subject": {"id": "s-1", "age": 30}, "data_categories": ["contact"], "purpose": "marketing",
    }
    return event_from_mapping(deep_merge(base, over))
