"""Checkpointer._follow (the batch's records checked per run of one chain, over columns) against
Checkpointer._follow_each (record by record, the reference): the same logs, the same checkpoints,
and on a record that does not continue its chain the same TrailCorruption and the same state.

The records are stand-ins (only ``chain_id`` is read); hashes are random 32-byte strings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.errors import TrailCorruption
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.processor import BatchResult
from auditor.trail.chainlog import ChainLog
from auditor.trail.keys import KeyRing

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CHAINS = ("events/0", "events/1", "events/2")


@dataclass(frozen=True)
class Rec:
    chain_id: str


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys", "example.com/auditor")


def _digest(chain: str, seq: int, salt: int = 0) -> bytes:
    return hashlib.sha256(f"{chain}/{seq}/{salt}".encode()).digest()


def sealed_for(order: list[str], heads: dict[str, tuple[int, bytes]]) -> list[tuple[Rec, int, bytes, bytes]]:
    """Records continuing each chain from ``heads`` (next seq, head hash), chains in the given order."""
    heads = dict(heads)
    out = []
    for chain in order:
        seq, prev = heads[chain]
        digest = _digest(chain, seq)
        out.append((Rec(chain), seq, prev, digest))
        heads[chain] = (seq + 1, digest)
    return out


def genesis_heads() -> dict[str, tuple[int, bytes]]:
    return {c: (0, ChainLog.genesis(c).head.head_hash) for c in CHAINS}


def checkpointer(keys: KeyRing, reference: bool) -> Checkpointer:
    cp = Checkpointer(keys.signer, keys.verifier, "c", audit_partitions=3, partitions=3, clock=lambda: NOW)
    if reference:
        cp._follow = cp._follow_each  # type: ignore[method-assign]
    return cp


def state(cp: Checkpointer) -> dict[str, object]:
    return {"logs": {c: (log.head, log.range.subtree_roots, list(log.since)) for c, log in cp.logs.items()},
            "saved": sorted(cp._saved)}


def run(cp: Checkpointer, sealed: list[tuple[Rec, int, bytes, bytes]]) -> tuple[object, dict[str, object]]:
    try:
        out = cp.seal(BatchResult(sealed=sealed))  # type: ignore[arg-type]
    except TrailCorruption as exc:
        return ("raised", str(exc), exc.chain, exc.seq), state(cp)
    return [(o.topic, o.partition, o.key) for o in out], state(cp)


def test_a_chain_whose_records_come_in_several_runs_is_followed_across_them(keys):
    order = ["events/0"] * 3 + ["events/1"] * 2 + ["events/0"] * 4 + ["events/2"] + ["events/1"]
    sealed = sealed_for(order, genesis_heads())
    fast, ref = checkpointer(keys, False), checkpointer(keys, True)

    def slow(sealed: object) -> None:
        raise AssertionError("a valid batch fell back to the record-by-record reference")

    fast._follow_each = slow  # type: ignore[assignment,method-assign]
    got = run(fast, sealed)
    assert got == run(ref, sealed)
    assert fast.logs["events/0"].head.size == 7 and fast.logs["events/1"].head.size == 3
    assert [k for k, _, _ in got[0]] == ["c", "c", "c"]  # type: ignore[misc]
    assert list(fast._saved) == ["events/0", "events/1", "events/2"], "first-touch order (checkpoint order)"


@pytest.mark.parametrize("where", [0, 1, 2, 5, 6, 8])
@pytest.mark.parametrize("what", ["prev", "seq", "digest-then-prev"])
def test_a_record_that_does_not_continue_its_chain_is_named_as_the_reference_names_it(keys, where, what):
    order = ["events/0"] * 4 + ["events/1"] * 3 + ["events/0"] * 2
    sealed = sealed_for(order, genesis_heads())
    rec, seq, prev, digest = sealed[where]
    if what == "prev":
        sealed[where] = (rec, seq, b"\x01" * 32, digest)
    elif what == "seq":
        sealed[where] = (rec, seq + 1, prev, digest)
    else:  # the record's own hash changed: the next record of its chain no longer links to it
        sealed[where] = (rec, seq, prev, b"\x02" * 32)
    fast, ref = checkpointer(keys, False), checkpointer(keys, True)
    got, want = run(fast, sealed), run(ref, sealed)
    assert got == want
    last_of_chain = where == max(i for i, (r, *_) in enumerate(sealed) if r.chain_id == rec.chain_id)
    if what != "digest-then-prev" or not last_of_chain:
        assert got[0][0] == "raised"  # type: ignore[index]


def test_a_batch_continues_the_chains_of_the_last_and_an_aborted_one_is_taken_back(keys):
    cp, ref = checkpointer(keys, False), checkpointer(keys, True)
    first = sealed_for(["events/0", "events/0", "events/1"], genesis_heads())
    for c in (cp, ref):
        run(c, first)
        c.commit()
    heads = {**genesis_heads(), "events/0": (2, first[1][3]), "events/1": (1, first[2][3])}
    second = sealed_for(["events/1", "events/0", "events/0"], heads)
    assert run(cp, second) == run(ref, second)
    cp.discard()
    assert cp.logs["events/0"].head.size == 2 and cp.logs["events/1"].head.size == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.lists(st.sampled_from(CHAINS), min_size=0, max_size=40),
       faults=st.lists(st.tuples(st.integers(0, 39), st.sampled_from(["prev", "seq", "digest", "chain", "swap"])),
                       max_size=2),
       known=st.sets(st.sampled_from(CHAINS)))
def test_follow_matches_the_record_by_record_reference(keys, order, faults, known):
    heads = genesis_heads()
    fast, ref = checkpointer(keys, False), checkpointer(keys, True)
    for chain in sorted(known):  # chains the instance already had, with records
        pre = sealed_for([chain] * 3, heads)
        for c in (fast, ref):
            run(c, pre)
            c.commit()
        heads[chain] = (3, pre[-1][3])
    sealed = sealed_for(order, heads)
    for at, what in faults:
        if not sealed:
            break
        at %= len(sealed)
        rec, seq, prev, digest = sealed[at]
        if what == "prev":
            sealed[at] = (rec, seq, _digest("x", at), digest)
        elif what == "seq":
            sealed[at] = (rec, seq - 1, prev, digest)
        elif what == "digest":
            sealed[at] = (rec, seq, prev, _digest("y", at))
        elif what == "chain":
            sealed[at] = (Rec(CHAINS[(CHAINS.index(rec.chain_id) + 1) % 3]), seq, prev, digest)
        else:
            sealed[at], sealed[-1] = sealed[-1], sealed[at]
    assert run(fast, sealed) == run(ref, sealed)
