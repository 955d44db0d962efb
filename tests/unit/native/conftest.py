"""Fixtures the native tests share."""

from __future__ import annotations

import pytest

from auditor.trail import KeyRing


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A fresh key ring per module (pseudonyms and checkpoint signatures of the records made)."""
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys")
