"""Fixtures of the policy unit tests.

``pack`` is the small hand-written pack (tests/data/packs/tiny.yaml), loaded once per module.
test_language.py and test_language_requests.py define a ``pack`` fixture of their own (another
pack); a module's own fixture overrides this one there.
"""

from __future__ import annotations

import pytest

from auditor.policy.engine import CompiledPack, load_pack
from tests.unit.policy.policykit import TINY

pytest.register_assert_rewrite("tests.unit.policy.seedkit")  # its checks assert (seed-read modules)


@pytest.fixture(scope="module")
def pack() -> CompiledPack:
    return load_pack(TINY)
