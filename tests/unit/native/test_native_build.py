"""The compiled module is the one this checkout builds, and the package version has one source."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import auditor
from auditor import _native

ROOT = Path(__file__).resolve().parents[3]


def test_crate_version_is_the_package_version():
    cargo = (ROOT / "native/Cargo.toml").read_text()
    crate = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert crate is not None
    assert crate.group(1) == auditor.__version__ == version("auditor")


def test_extension_is_built_into_this_checkout():
    assert Path(_native.__file__).resolve().parent == ROOT / "auditor"
    assert {"EventCodec", "RecordSealer", "Decoded", "Refused", "genesis_hash"} <= set(dir(_native))
