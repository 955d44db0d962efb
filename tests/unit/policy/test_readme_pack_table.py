"""The README's table of the five seed packs states each pack's permits, constraints and examples.

Those figures went stale once (packs gained rules and examples, the table did not): this keeps
them equal to what the packs and their example tables hold.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auditor.policy.examples import examples_path, load_examples
from auditor.policy.loader import parse_pack, resolve_pack

README = Path(__file__).resolve().parents[3] / "README.md"
ROW = re.compile(
    r"^\| `(?P<pack>\w+)` \| \d{3} \| (?P<permits>\d+) \+ (?P<constraints>\d+) \| (?P<examples>\d+) \|", re.M
)
SEED_PACKS = ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct"]


def _rows() -> dict[str, tuple[int, int, int]]:
    return {
        m["pack"]: (int(m["permits"]), int(m["constraints"]), int(m["examples"]))
        for m in ROW.finditer(README.read_text(encoding="utf-8"))
    }


def test_the_table_has_a_row_per_seed_pack() -> None:
    assert sorted(_rows()) == sorted(SEED_PACKS)


@pytest.mark.parametrize("name", SEED_PACKS)
def test_the_row_states_what_the_pack_holds(name: str) -> None:
    pack = parse_pack(resolve_pack(name))
    held = (len(pack.permits), len(pack.constraints), len(load_examples(examples_path(name))))
    assert _rows()[name] == held, f"README row for {name} says (permits, constraints, examples) = {_rows()[name]}"
