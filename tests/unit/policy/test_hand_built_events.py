"""An Event built by hand with plain strings where the model has enums (the codec never does this;
the engine's comments promise such events are judged): every path gives the decision the
interpreted rules give the same event with real enums, and no reason text raises."""

from __future__ import annotations

import dataclasses

import pytest

from auditor.events.model import Event
from auditor.policy import conditions as c
from auditor.policy import load_pack
from auditor.policy.engine import compile_pack, evaluate, evaluate_interpreted, evaluate_plain
from tests.unit.policy.test_compiled_tests import (
    PACKS,
    _compile_at_once,  # noqa: F401  (autouse fixture)
    _events,
    _tests,
)


def _plain(e: Event) -> Event:
    """``e`` with every enum field as its plain string value."""
    return dataclasses.replace(
        e, kind=e.kind.value,
        identifiability=e.identifiability.value,
        actor=dataclasses.replace(e.actor, type=e.actor.type.value, organisation=e.actor.organisation.value),
        legal_request=dataclasses.replace(e.legal_request, type=e.legal_request.type.value),
        transfer=dataclasses.replace(e.transfer, safeguard=e.transfer.safeguard.value))


@pytest.mark.parametrize("pack_id", PACKS)
def test_an_event_with_plain_strings_for_every_enum_gets_the_enum_event_s_decision(pack_id):
    plain = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
    memo = load_pack(pack_id)
    for e in _events(plain.pack, pack_id + "/hand", 300):
        want = evaluate_interpreted(e, plain)
        hand = _plain(e)
        assert evaluate_interpreted(hand, plain) == want, e
        assert evaluate_plain(hand, plain) == want, e
        assert evaluate(hand, memo) == want, e


def test_a_failed_cross_border_safeguard_with_a_plain_string_safeguard_is_reported():
    """The transfer rule's reason read ``safeguard.value``: a plain string raised AttributeError."""
    pack = load_pack("inper").pack
    test = next(t for rule in pack.rules for top in rule.conditions for t in _tests(top)
                if isinstance(t, c.SafeguardIfCrossBorder))
    e = _events(pack, "inper/hand", 1)[0]
    hand = dataclasses.replace(e, transfer=dataclasses.replace(
        e.transfer, cross_border=True, destination_country="XX", safeguard="NONE"))
    x = c.Derived(frozenset(), None, pack.minor_age)
    assert not test.holds(hand, x)
    assert "relies on safeguard 'none'" in test.reason(hand, x)
