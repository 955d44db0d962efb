"""Fixtures shared by the trail tests: a key ring and the golden trail, generated once per module
that uses them, and a fresh copy of the golden trail per test to tamper with."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
from trailkit import write_trail

from auditor.trail import KeyRing
from auditor.trail.record import AuditRecord

GOLDEN_N = 200  # one chain, checkpoints every 50 (the modules' N)


class Golden(NamedTuple):
    trail: Path
    records: list[AuditRecord]   # as sealed, read back from the files


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys")


@pytest.fixture(scope="module")
def golden(tmp_path_factory, keys):
    trail = tmp_path_factory.mktemp("golden") / "trail"
    return Golden(trail, write_trail(trail, keys, GOLDEN_N, batch=25, checkpoint_every=50))


@pytest.fixture
def copy(golden, tmp_path):
    """A copy of the golden trail, without its lock file."""
    dst = tmp_path / "trail"
    shutil.copytree(golden.trail, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst
