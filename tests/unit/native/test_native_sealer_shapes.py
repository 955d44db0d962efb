"""The compiled encoder reads arrays and maps in place from a tuple or a list (and any other
sequence, and a dict for a map), with the bytes of the reference whatever the container, and
refuses a malformed map before writing any of it."""

from __future__ import annotations

import sys
from collections import UserList
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trail"))
from trailkit import make_records  # noqa: E402

from auditor.native import NativeSealer  # noqa: E402
from auditor.trail.canonical import encode_body  # noqa: E402

SEALER = NativeSealer()


def with_facts(record, **changes):  # type: ignore[no-untyped-def]
    assert record.facts is not None
    return record._replace(facts=record.facts._replace(**changes))


def test_an_array_encodes_alike_from_a_tuple_a_list_or_another_sequence(keys):
    r = make_records(keys, 1)[0]
    cats = ("contact", "health", "location")
    expected = encode_body(with_facts(r, data_categories=cats))
    for shape in (tuple, list, UserList):
        assert SEALER.encode_body(with_facts(r, data_categories=shape(cats))) == expected, shape
    assert SEALER.encode_body(with_facts(r, data_categories=[])) == encode_body(with_facts(r, data_categories=()))


def test_a_map_encodes_alike_from_pairs_in_a_tuple_or_a_list_or_a_dict(keys):
    r = make_records(keys, 1)[0]
    pairs = (("b", "2"), ("a", "1"), ("c", "3"))  # written in the order given
    expected = encode_body(with_facts(r, attributes=pairs))
    for shape in (tuple, list, dict):
        assert SEALER.encode_body(with_facts(r, attributes=shape(pairs))) == expected, shape
    assert SEALER.encode_body(with_facts(r, attributes=())) == encode_body(with_facts(r, attributes=()))


@pytest.mark.parametrize("bad", [
    (("a", "1"), "not a pair"),
    (("a", "1"), ("b", "2", "3")),
    (("a", "1"), ["b", "2"]),  # a pair is a tuple
])
def test_a_map_with_an_item_that_is_not_a_pair_is_refused(keys, bad):
    r = make_records(keys, 1)[0]
    with pytest.raises(ValueError, match=r"facts\.attributes.*\(key, value\) pairs"):
        SEALER.encode_body(with_facts(r, attributes=bad))


def test_a_map_key_that_is_not_a_string_is_refused(keys):
    r = make_records(keys, 1)[0]
    for shape in (tuple, list, dict):
        with pytest.raises(ValueError, match="map keys must be str"):
            SEALER.encode_body(with_facts(r, attributes=shape(((1, "x"),))))
