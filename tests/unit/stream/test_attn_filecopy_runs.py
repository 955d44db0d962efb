"""attn: FileCopy.append in runs (e8c564a) against appending the same values one by one, over
generated batch sequences on three chains: replays, gaps (backfilled), forks (another record at a
known seq), records whose hash or link is damaged, bytes that do not frame, empty batches, and a
run cut at every boundary (batches of one). The same heads, the same backfill requests, the same
refusal (or none) at the same record; then the trails verify with the same chains. Examples:
ATTN_FILECOPY_EXAMPLES (default small: the suite's budget)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import compliant, messages, processor, violating, wire

from auditor.errors import TrailCorruption
from auditor.stream.filecopy import FileCopy
from auditor.trail.canonical import iter_frames
from auditor.trail.keys import KeyRing
from auditor.trail.store import TrailWriter
from auditor.trail.verify import verify_trail

EXAMPLES = int(os.environ.get("ATTN_FILECOPY_EXAMPLES", "12"))
CHAINS, LENGTH = 3, 12


@cache
def topic() -> tuple[tuple[bytes, ...], ...]:
    """Per chain, its audit-topic values in seq order (two sealings: the second a fork)."""
    out = []
    for fork in (False, True):
        p = processor()
        for part in range(CHAINS):
            evs = [wire(violating("ipasar", i) if (i + fork) % 4 == 0 else compliant("ipasar", i))
                   for i in range(LENGTH)]
            out.append(tuple(o.value for o in p.process(messages(evs, partition=part)).outgoing if o.topic == "audit"))
    return tuple(out)


def damaged(r: bytes, how: int) -> bytes:
    if how == 1:  # the hash
        return r[:-1] + bytes([r[-1] ^ 1])
    if how == 2:  # the body (the hash no longer matches)
        return r[:-40] + bytes([r[-40] ^ 1]) + r[-39:]
    return r[:7]  # cut short: does not frame


#: (chain, seq, how): how 0 = the record, 1-3 = damaged, 4 = the fork's record at that seq
REC = st.tuples(st.integers(0, CHAINS - 1), st.integers(0, LENGTH - 1),
                st.sampled_from([0] * 12 + [1, 2, 3, 4]))


def value(c: int, seq: int, how: int) -> bytes:
    chains = topic()
    if how == 4:
        return chains[CHAINS + c][seq]
    r = chains[c][seq]
    return r if how == 0 else damaged(r, how)


def chain_of(data: bytes) -> str:
    return next(iter_frames(data, 1)).chain_id


class Copy:
    def __init__(self, path: Path, keys: Path) -> None:
        self.asked: list[tuple[str, int, int]] = []
        good = {chain_of(rs[0]): rs for rs in topic()[:CHAINS]}

        def backfill(chain: str, first: int, stop: int) -> list[bytes]:
            self.asked.append((chain, first, stop))
            return list(good[chain][first:stop])

        self.path = path
        self.copy = FileCopy(TrailWriter.open(path, KeyRing.load(keys), checkpoint_every=5), backfill)

    def append(self, batch: list[bytes]) -> Any:
        try:
            self.copy.append(batch)
        except TrailCorruption as exc:
            return (type(exc).__name__, getattr(exc, "seq", None))
        return None

    def append_one_by_one(self, batch: list[bytes]) -> Any:
        for r in batch:
            got = self.append([r])
            if got is not None:
                return got
        return None


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(REC, max_size=20), min_size=1, max_size=6))
def test_batches_in_runs_end_as_one_by_one(tmp_path_factory, batches):
    base = tmp_path_factory.mktemp("fc")
    KeyRing.generate(base / "keys")
    runs, one = Copy(base / "runs", base / "keys"), Copy(base / "one", base / "keys")
    for spec in batches:
        batch = [value(*x) for x in spec]
        assert runs.append(batch) == one.append_one_by_one(batch)
        assert runs.copy.writer.heads == one.copy.writer.heads
        assert runs.asked == one.asked
    runs.copy.close()
    one.copy.close()
    verifier = KeyRing.load(base / "keys").verifier
    a, b = verify_trail(base / "runs", verifier), verify_trail(base / "one", verifier)
    assert a.chains == b.chains and a.records == b.records


def test_an_empty_batch_and_a_batch_of_one_run_per_record(tmp_path):
    KeyRing.generate(tmp_path / "keys")
    copy = Copy(tmp_path / "t", tmp_path / "keys")
    assert copy.append([]) is None
    chain = topic()[0]
    assert copy.append(list(chain)) is None  # one run
    assert copy.copy.writer.head(chain_of(chain[0])).size == LENGTH
    assert copy.append(list(chain) * 3) is None  # replays only: nothing appended
    copy.copy.close()
