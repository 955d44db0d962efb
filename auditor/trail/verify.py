"""Verify a trail: every record hash and link, every checkpoint's signature and Merkle root.

The verifier streams the segments once, keeping per chain only its head, an incremental Merkle
range and the checkpoints still to compare. Each finding is an :class:`Issue` that names the
chain, the seq and, for hash mismatches, the expected and the actual hash:

* ``modified``     a record's content no longer hashes to its stored hash, or its successor
                   links to a different hash (altered and re-hashed)
* ``deleted``      seq numbers missing from a chain
* ``inserted``     a record claiming a seq that is already taken, or out of sequence
* ``reordered``    a segment whose header index differs from its file name, or a missing segment
* ``truncated``    a chain shorter than a signed checkpoint of the trail
* ``rollback``     a chain shorter than, or different from, a trusted checkpoint kept elsewhere
* ``checkpoint``   a chain that differs from a checkpoint it should match (history rewritten)
* ``signature``    a checkpoint with a bad signature or an unknown key
* ``unsigned``     more unsigned records after the last checkpoint than the cadence allows
* ``damaged``      bytes that cannot be read (a torn tail before repair, a broken block)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from auditor.errors import TrailCorruption
from auditor.trail.chain import RECORD_PREFIX, genesis_hash
from auditor.trail.checkpoint import Checkpoint, signature_problem
from auditor.trail.keys import Verifier
from auditor.trail.merkle import MerkleRange
from auditor.trail.segment import SegmentScan, list_segments, peek_segment, scan_segment
from auditor.trail.store import read_checkpoint_lines, read_trail_meta


@dataclass(frozen=True)
class Issue:
    kind: str
    message: str
    chain: str | None = None
    seq: int | None = None
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.chain:
            where = f"[{self.chain}" + (f" seq {self.seq}]" if self.seq is not None else "]")
        detail = f" (expected {self.expected}, actual {self.actual})" if self.expected or self.actual else ""
        return f"{self.kind}: {where} {self.message}{detail}".replace(":  ", ": ")


@dataclass
class VerifyReport:
    records: int = 0
    chains: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    issues: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def kinds(self) -> set[str]:
        return {i.kind for i in self.issues}


@dataclass
class _Expect:
    cp: Checkpoint
    trusted: bool


class _Chain:
    """Verification state of one chain; leaves enter the Merkle range one record late so that
    a duplicate seq can still be resolved in favour of the record its successor links to."""

    def __init__(self, chain_id: str, expected: dict[int, list[_Expect]], report: VerifyReport) -> None:
        self.id = chain_id
        self.size = 0
        self.head = genesis_hash(chain_id)
        self.prev_head = self.head
        self.pending: bytes | None = None
        self.alt: bytes | None = None
        self.merkle = MerkleRange()
        self.merkle_ok = True
        self.expected = expected
        self.report = report
        self.last_match = 0

    def issue(self, kind: str, message: str, seq: int | None, expected: bytes | None = None,
              actual: bytes | None = None) -> None:
        self.report.issues.append(Issue(kind, message, self.id, seq, expected.hex() if expected else None,
                                        actual.hex() if actual else None))

    def _push(self) -> None:
        if self.pending is None:
            return
        leaf, self.pending = self.pending, None
        self.merkle.append(leaf)
        for exp in self.expected.pop(self.size, ()):
            self._compare(exp, leaf)

    def _compare(self, exp: _Expect, leaf: bytes) -> None:
        cp, what = exp.cp, "trusted checkpoint" if exp.trusted else "signed checkpoint"
        kind = "rollback" if exp.trusted else "checkpoint"
        if cp.head_hash != leaf:
            self.issue(kind, f"record seq {cp.size - 1} differs from the {what} of size {cp.size}; "
                             f"records after seq {self.last_match - 1} were rewritten or replaced",
                       cp.size - 1, cp.head_hash, leaf)
        elif self.merkle_ok and cp.merkle_root != self.merkle.root():
            self.issue(kind, f"Merkle root of the first {cp.size} records differs from the {what}",
                       cp.size - 1, cp.merkle_root, self.merkle.root())
        else:
            self.last_match = cp.size

    def _accept(self, seq: int, digest: bytes) -> None:
        self._push()
        self.prev_head, self.head, self.pending, self.size = self.head, digest, digest, seq + 1

    def add(self, seq: int, prev: bytes, digest: bytes) -> None:
        if seq == self.size:
            if prev != self.head:
                if self.alt is not None and prev == self.alt:
                    self.issue("inserted", f"a record claiming seq {seq - 1} was inserted before the "
                                           f"genuine one (seq {seq} links to the other)", seq - 1)
                    self.head = self.pending = self.alt
                elif self.size == 0:
                    self.issue("modified", "seq 0 does not start from the chain's genesis hash", 0,
                               self.head, prev)
                else:
                    self.issue("modified", f"record seq {seq - 1} was altered and re-hashed: seq {seq} "
                                           f"links to another hash", seq - 1, prev, self.head)
                    self.pending = prev  # the genuine leaf, so later checkpoints still compare
            elif self.alt is not None:
                self.issue("inserted", f"a second record claiming seq {seq - 1} was inserted", seq - 1)
            self.alt = None
            self._accept(seq, digest)
        elif seq == self.size - 1 and self.alt is None and prev == self.prev_head:
            self.alt = digest  # a duplicate seq; the successor decides which one is genuine
        elif seq > self.size:
            first = self.size
            self.issue("deleted", f"records seq {first}..{seq - 1} are missing ({seq - first} deleted)"
                       if seq - first > 1 else f"record seq {first} is missing (deleted)", first)
            self.merkle_ok = False
            self.alt = None
            self._accept(seq, digest)
        else:
            self.issue("inserted", f"a record claiming seq {seq} appears after seq {self.size - 1} "
                                   "(inserted, duplicated or out of order)", seq)

    def finish(self) -> None:
        if self.alt is not None:
            self.issue("inserted", f"two records claim seq {self.size - 1}; one was inserted", self.size - 1)
        self._push()


def _segment_order(scans: list[SegmentScan], report: VerifyReport) -> list[SegmentScan]:
    for s in scans:
        if s.meta_index is not None and s.meta_index != s.name_index:
            report.issues.append(Issue("reordered", f"segment file {s.path.name} holds segment "
                                       f"{s.meta_index}: segments were renamed or reordered"))
    indices = [s.meta_index for s in scans if s.meta_index is not None]
    if len(indices) == len(scans):
        present = set(indices)
        for missing in sorted(set(range(max(indices, default=-1) + 1)) - present):
            report.issues.append(Issue("reordered", f"segment {missing} is missing"))
        return sorted(scans, key=lambda s: s.meta_index or 0)
    return scans


def verify_trail(trail_dir: Path, verifier: Verifier, trusted: Sequence[Checkpoint] = (), *,
                 progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Verify everything in ``trail_dir``; ``progress`` is called with bytes processed."""
    report = VerifyReport()
    meta = read_trail_meta(trail_dir)
    cadence = int(meta.get("checkpoint_every", 0)) or None
    expected: dict[str, dict[int, list[_Expect]]] = {}
    signed_size: dict[str, int] = {}
    lines, torn = read_checkpoint_lines(trail_dir)
    if torn:
        report.notes.append("the checkpoint log ends in a partial line (crash while writing)")
    for n, line in enumerate(lines, start=1):
        try:
            cp = Checkpoint.from_json(line)
        except TrailCorruption as exc:
            report.issues.append(Issue("signature", f"checkpoint line {n}: {exc}"))
            continue
        problem = signature_problem(cp, verifier)
        if problem:
            report.issues.append(Issue("signature", f"checkpoint line {n} (size {cp.size}): {problem}",
                                       cp.chain_id, cp.size - 1))
            continue
        report.checkpoints += 1
        expected.setdefault(cp.chain_id, {}).setdefault(cp.size, []).append(_Expect(cp, False))
        signed_size[cp.chain_id] = max(signed_size.get(cp.chain_id, 0), cp.size)
    for cp in trusted:
        problem = signature_problem(cp, verifier)
        if problem:
            report.issues.append(Issue("signature", f"trusted checkpoint: {problem}", cp.chain_id))
            continue
        expected.setdefault(cp.chain_id, {}).setdefault(cp.size, []).append(_Expect(cp, True))
    all_expected = {c: [e for es in d.values() for e in es] for c, d in expected.items()}

    chains: dict[str, _Chain] = {}
    segments = list_segments(trail_dir)
    heads = [peek_segment(path, index) for index, path in segments]
    ordered = _segment_order(heads, report)
    sha256 = hashlib.sha256
    for pos, head in enumerate(ordered):
        try:
            scan = scan_segment(head.path, head.name_index)  # one segment in memory at a time
        except TrailCorruption as exc:
            report.issues.append(Issue("damaged", str(exc)))
            continue
        if scan.torn:
            where = "at the end of the trail (a crash mid-write; opening the trail for writing repairs it)" \
                if pos == len(ordered) - 1 else "in the middle of the trail"
            report.issues.append(Issue("damaged", f"segment {scan.path.name} has an incomplete block at "
                                                  f"byte {scan.good_end} {where}"))
        buf = scan.buf
        try:
            for _block, f in scan.frames():
                chain = chains.get(f.chain_id)
                if chain is None:
                    chain = chains[f.chain_id] = _Chain(f.chain_id, expected.get(f.chain_id, {}), report)
                actual = sha256(RECORD_PREFIX + buf[f.start:f.end - 32]).digest()
                if actual != f.record_hash:
                    chain.issue("modified", f"record seq {f.seq} was modified", f.seq, f.record_hash, actual)
                chain.add(f.seq, f.prev_hash, f.record_hash)
                report.records += 1
        except TrailCorruption as exc:
            report.issues.append(Issue("damaged", f"segment {scan.path.name}: {exc}"))
        if progress:
            progress(len(buf))
        del scan, buf  # release the segment's bytes before reading the next one
    _finish(chains, all_expected, signed_size, cadence, report)
    return report


def _finish(chains: dict[str, _Chain], all_expected: dict[str, list[_Expect]], signed_size: dict[str, int],
            cadence: int | None, report: VerifyReport) -> None:
    for chain in chains.values():
        chain.finish()
        report.chains[chain.id] = chain.size
    for chain_id, exps in all_expected.items():
        size = report.chains.get(chain_id, 0)
        beyond: dict[bool, _Expect] = {}
        for exp in exps:
            known = beyond.get(exp.trusted)
            if exp.cp.size > size and (known is None or exp.cp.size > known.cp.size):
                beyond[exp.trusted] = exp
        for exp in beyond.values():
            if exp.trusted:
                report.issues.append(Issue("rollback", f"the trail holds {size} records but a trusted "
                                           f"checkpoint signs {exp.cp.size}: rolled back or truncated",
                                           chain_id, size))
            else:
                report.issues.append(Issue("truncated", f"the chain ends at {size} records but a signed "
                                           f"checkpoint covers {exp.cp.size}: records seq {size}.."
                                           f"{exp.cp.size - 1} were removed", chain_id, size))
    for chain_id, size in report.chains.items():
        unsigned = size - signed_size.get(chain_id, 0)
        if unsigned <= 0:
            continue
        if cadence is not None and unsigned > cadence:
            report.issues.append(Issue("unsigned", f"{unsigned} records after the last checkpoint "
                                       f"(cadence {cadence}): checkpoints were removed", chain_id,
                                       signed_size.get(chain_id, 0)))
        else:
            report.notes.append(f"{chain_id}: the last {unsigned} records are not yet covered by a "
                                "checkpoint (a cut there would go unnoticed)")
