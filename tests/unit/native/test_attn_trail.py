"""attn: chain_encoded (native/src/trail.rs, the trail writer's compiled step) given a compact range
that cannot be one (fewer or more subtree roots than one bits of its size): a ValueError, as
merkle_extend answers, not a Rust panic (PanicException is a BaseException: ``except Exception``
does not stop it). A real MerkleRange is checked against its root when restored; this is the
compiled call's own guard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trail"))
from trailkit import make_records  # noqa: E402

from auditor import _native  # noqa: E402
from auditor.native import NativeSealer  # noqa: E402


class Range:
    def __init__(self, size: int, roots: list[bytes]) -> None:
        self.size, self.subtree_roots = size, roots


@pytest.mark.parametrize(("size", "roots"), [(3, 0), (3, 1), (1, 0), (0, 1), (4, 2), (7, 2)])
def test_a_compact_range_that_cannot_be_one_is_a_value_error(keys, size, roots):
    r = make_records(keys, 1)[0]
    (sealed,), _ = NativeSealer().seal_batch([r], {})
    with pytest.raises(ValueError, match="subtree roots"):
        _native.chain_encoded([sealed.data], {}, {r.chain_id: Range(size, [b"\x11" * 32] * roots)})


def test_a_compact_range_that_can_be_one_extends(keys):
    r = make_records(keys, 1)[0]
    (sealed,), _ = NativeSealer().seal_batch([r], {})
    _, accepted, chains, bad = _native.chain_encoded([sealed.data], {}, {r.chain_id: Range(3, [b"\x11" * 32] * 2)})
    assert accepted == 1 and bad is None and chains[0][3] == 4
