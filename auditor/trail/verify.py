"""Verify a trail from any source: every record hash and link, every checkpoint's signature and
Merkle root, and that signed checkpoints cover the trail.

The verifier streams the source once, keeping per chain only its head, an incremental Merkle
range and the checkpoints still to compare. Each finding is an :class:`Issue` that names the
chain, the seq and, for hash mismatches, the expected and the actual hash:

* ``modified``     a record's content no longer hashes to its stored hash, or its successor
                   links to a different hash (altered and re-hashed)
* ``deleted``      seq numbers missing from a chain
* ``inserted``     a record claiming a seq that is already taken, or out of sequence
* ``reordered``    a segment whose header index differs from its file name, or a missing segment
* ``truncated``    a chain shorter than a signed checkpoint of the trail
* ``rollback``     a chain shorter than a trusted checkpoint kept elsewhere
* ``fork``         a chain whose history differs from a trusted checkpoint, or two signed
                   checkpoints of one size with different roots
* ``checkpoint``   a chain that differs from a checkpoint it should match (history rewritten)
* ``proof``        a stored consistency proof between two checkpoints that does not verify
* ``signature``    a checkpoint with a bad signature, an unknown key, or unreadable
* ``unsigned``     no valid checkpoint at all, or records older than the allowed age that no
                   valid checkpoint covers (checkpoints removed, or the writer stopped signing)
* ``unwitnessed``  with witnesses required: records older than the allowed age without a
                   checkpoint cosigned by enough witnesses
* ``damaged``      bytes that cannot be read (a torn tail before repair, a broken block)

A verifier that finds nothing to verify does not pass: records without any valid checkpoint
are ``unsigned``, whatever their age.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Callable, Sequence

from auditor.errors import TrailCorruption
from auditor.trail.canonical import record_from_bytes
from auditor.trail.checkpoint import SignedCheckpoint, StoredCheckpoint
from auditor.trail.hashing import genesis_hash, leaf_hash
from auditor.trail.keys import Verifier
from auditor.trail.merkle import MerkleRange
from auditor.trail.note import NoteVerifier
from auditor.trail.source import Chunk, FileSource, Issue, TrailSource

__all__ = ["DEFAULT_MAX_UNSIGNED_AGE", "Issue", "Policy", "VerifyReport", "verify_source", "verify_trail"]

DEFAULT_MAX_UNSIGNED_AGE = timedelta(minutes=15)


@dataclass(frozen=True)
class Policy:
    """What a trail must show to pass, beyond intact records."""

    max_unsigned_age: timedelta | None = None  # default: the source's (15 minutes for a directory)
    witnesses: tuple[NoteVerifier, ...] = ()
    min_witnesses: int = 0
    now: datetime | None = None  # default: the time verification starts
    require_checkpoints: bool = True  # False: records and links only (no key at hand)


@dataclass
class VerifyReport:
    records: int = 0
    chains: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    covered: dict[str, int] = field(default_factory=dict)     # per chain: records under a valid checkpoint
    witnessed: dict[str, int] = field(default_factory=dict)   # per chain: records under a cosigned one
    history: dict[str, list[SignedCheckpoint]] = field(default_factory=dict)
    entries: dict[str, dict[int, StoredCheckpoint]] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def kinds(self) -> set[str]:
        return {i.kind for i in self.issues}


@dataclass
class _Expect:
    size: int
    root: bytes
    head: bytes
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
        what = "trusted checkpoint" if exp.trusted else "signed checkpoint"
        kind = "fork" if exp.trusted else "checkpoint"
        if exp.head != leaf:
            self.issue(kind, f"record seq {exp.size - 1} differs from the {what} of size {exp.size}; "
                             f"records after seq {self.last_match - 1} were rewritten or replaced",
                       exp.size - 1, exp.head, leaf)
        elif self.merkle_ok and exp.root != self.merkle.root():
            self.issue(kind, f"Merkle root of the first {exp.size} records differs from the {what}",
                       exp.size - 1, exp.root, self.merkle.root())
        else:
            self.last_match = exp.size

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


# ---------------------------------------------------------------- checkpoints

def load_checkpoints(source: TrailSource, verifier: Verifier, policy: Policy,
                     report: VerifyReport) -> dict[str, list[SignedCheckpoint]]:
    """Every checkpoint that verifies, per chain in size order; findings for the others."""
    per_chain: dict[str, dict[int, SignedCheckpoint]] = {}
    proofs: list[tuple[str, StoredCheckpoint, SignedCheckpoint]] = []
    for loc in source.checkpoints():
        if loc.entry is None:
            report.issues.append(Issue("signature", f"{loc.where}: {loc.problem}"))
            continue
        try:
            signed = loc.entry.open(verifier, check_range=False)
        except TrailCorruption as exc:
            report.issues.append(Issue("signature", f"{loc.where}: {exc}"))
            continue
        report.checkpoints += 1
        problem = loc.entry.range_problem(signed)
        if problem:  # unsigned companion data altered; the signed checkpoint itself still counts
            report.issues.append(Issue("checkpoint", f"{loc.where}: {problem}", signed.chain_id, signed.size - 1))
        sizes = per_chain.setdefault(signed.chain_id, {})
        other = sizes.get(signed.size)
        if other is not None and other.root != signed.root:
            report.issues.append(Issue("fork", f"two signed checkpoints of size {signed.size} have different roots: "
                                               "the log signed two histories", signed.chain_id, signed.size - 1,
                                       other.root.hex(), signed.root.hex()))
            continue
        sizes[signed.size] = signed
        report.entries.setdefault(signed.chain_id, {})[signed.size] = loc.entry
        if loc.entry.prev_size or loc.entry.proof:
            proofs.append((loc.where, loc.entry, signed))
        if policy.min_witnesses:
            try:
                n = len({(v.name, v.key_id) for v, _ in signed.cosignatures(policy.witnesses)})
            except TrailCorruption as exc:
                report.issues.append(Issue("unwitnessed", f"{loc.where}: {exc}", signed.chain_id, signed.size - 1))
                n = 0
            if n >= policy.min_witnesses:
                report.witnessed[signed.chain_id] = max(report.witnessed.get(signed.chain_id, 0), signed.size)
    for where, entry, signed in proofs:
        previous = per_chain[signed.chain_id].get(entry.prev_size)
        if previous is not None and not entry.proof_holds(previous, signed):
            report.issues.append(Issue("proof", f"{where}: the stored consistency proof from size {previous.size} to "
                                                f"{signed.size} does not verify", signed.chain_id, signed.size - 1))
    history = {c: [sizes[k] for k in sorted(sizes)] for c, sizes in per_chain.items()}
    report.history = history
    return history


# ---------------------------------------------------------------- the pass over the records

def verify_source(source: TrailSource, verifier: Verifier, trusted: Sequence[SignedCheckpoint] = (),
                  policy: Policy = Policy(), *, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Verify everything ``source`` holds; ``progress`` is called with bytes processed."""
    report = VerifyReport()
    now = policy.now or datetime.now(UTC)
    history = load_checkpoints(source, verifier, policy, report) if policy.require_checkpoints or verifier else {}
    expected: dict[str, dict[int, list[_Expect]]] = {}
    for chain_id, cps in history.items():
        for cp in cps:
            expected.setdefault(chain_id, {}).setdefault(cp.size, []).append(
                _Expect(cp.size, cp.root, cp.checkpoint.head, False))
        report.covered[chain_id] = cps[-1].size
    for cp in trusted:
        expected.setdefault(cp.chain_id, {}).setdefault(cp.size, []).append(
            _Expect(cp.size, cp.root, cp.checkpoint.head, True))
    all_expected = {c: [e for es in d.values() for e in es] for c, d in expected.items()}
    # the first record after what is signed (and witnessed): its age decides whether the tail passes
    watch = {c: {report.covered.get(c, 0), report.witnessed.get(c, 0)} for c in expected}
    first_unsigned: dict[tuple[str, int], bytes] = {}

    chains: dict[str, _Chain] = {}
    for item in source.chunks():
        if isinstance(item, Issue):
            report.issues.append(item)
            continue
        _scan_chunk(item, chains, expected, watch, first_unsigned, report)
        if progress:
            progress(len(item.buf))
    for chain in chains.values():
        chain.finish()
        report.chains[chain.id] = chain.size
    _check_beyond(all_expected, report)
    if policy.require_checkpoints:
        grace = getattr(source, "unsigned_grace", None)
        limit = policy.max_unsigned_age if policy.max_unsigned_age is not None else \
            (grace if grace is not None else DEFAULT_MAX_UNSIGNED_AGE)
        why = getattr(source, "unsigned_means", None) or "checkpoints were removed or the writer stopped signing"
        _check_coverage(report, policy, now, first_unsigned, limit, why)
    notes = getattr(source, "notes", None)
    if notes:
        report.notes.extend(notes)
    return report


def _scan_chunk(chunk: Chunk, chains: dict[str, _Chain], expected: dict[str, dict[int, list[_Expect]]],
                watch: dict[str, set[int]], first_unsigned: dict[tuple[str, int], bytes],
                report: VerifyReport) -> None:
    buf = chunk.buf
    try:
        for f in chunk.frames:
            chain = chains.get(f.chain_id)
            if chain is None:
                chain = chains[f.chain_id] = _Chain(f.chain_id, expected.get(f.chain_id, {}), report)
            actual = leaf_hash(buf[f.start:f.end - 32])
            if actual != f.record_hash:
                chain.issue("modified", f"record seq {f.seq} was modified ({chunk.where})", f.seq,
                            f.record_hash, actual)
            if f.seq in watch.get(f.chain_id, (0,)) and (f.chain_id, f.seq) not in first_unsigned:
                first_unsigned[(f.chain_id, f.seq)] = buf[f.start:f.end]
            chain.add(f.seq, f.prev_hash, f.record_hash)
            report.records += 1
    except TrailCorruption as exc:
        report.issues.append(Issue("damaged", f"{chunk.where}: {exc}"))


def _check_beyond(all_expected: dict[str, list[_Expect]], report: VerifyReport) -> None:
    for chain_id, exps in all_expected.items():
        size = report.chains.get(chain_id, 0)
        beyond: dict[bool, _Expect] = {}
        for exp in exps:
            known = beyond.get(exp.trusted)
            if exp.size > size and (known is None or exp.size > known.size):
                beyond[exp.trusted] = exp
        for exp in beyond.values():
            if exp.trusted:
                report.issues.append(Issue("rollback", f"the trail holds {size} records but a trusted "
                                           f"checkpoint signs {exp.size}: rolled back or truncated", chain_id, size))
            else:
                report.issues.append(Issue("truncated", f"the chain ends at {size} records but a signed "
                                           f"checkpoint covers {exp.size}: records seq {size}.."
                                           f"{exp.size - 1} were removed", chain_id, size))


def _age(data: bytes | None, now: datetime) -> timedelta | None:
    if data is None:
        return None
    try:
        return now - record_from_bytes(data).processed_at
    except TrailCorruption:
        return None


def _check_coverage(report: VerifyReport, policy: Policy, now: datetime, first: dict[tuple[str, int], bytes],
                    limit: timedelta, why_unsigned: str) -> None:
    if report.records and not report.checkpoints:
        report.issues.append(Issue("unsigned", f"no valid signed checkpoint: nothing vouches for these "
                                               f"{report.records} records (checkpoints missing or removed)"))
    for chain_id, size in report.chains.items():
        signed = report.covered.get(chain_id, 0)
        if size > signed and report.checkpoints:
            age = _age(first.get((chain_id, signed)), now)
            what = f"{size - signed} records after " + (f"the last signed checkpoint (size {signed})" if signed
                                                         else "no signed checkpoint at all")
            if age is None or age > limit:
                how_old = "of unknown age" if age is None else f"the oldest processed {_fmt(age)} ago"
                report.issues.append(Issue("unsigned", f"{what}, {how_old}, beyond the allowed {_fmt(limit)}: "
                                                       f"{why_unsigned}", chain_id, signed))
            else:
                report.notes.append(f"{chain_id}: the last {size - signed} records are not yet covered by a "
                                    f"checkpoint (the oldest {_fmt(age)} old, within {_fmt(limit)})")
        if policy.min_witnesses:
            seen = report.witnessed.get(chain_id, 0)
            if size > seen:
                age = _age(first.get((chain_id, seen)), now)
                if age is None or age > limit:
                    report.issues.append(Issue(
                        "unwitnessed", f"{size - seen} records after size {seen} have no checkpoint cosigned by "
                                       f"{policy.min_witnesses} witness(es) and are older than {_fmt(limit)}",
                        chain_id, seen))
    if policy.min_witnesses and report.records and not report.witnessed:
        report.issues.append(Issue("unwitnessed", f"no checkpoint carries {policy.min_witnesses} valid witness "
                                                  "cosignature(s)"))


def _fmt(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{d.total_seconds():.0f}s"


def verify_trail(trail_dir: Path, verifier: Verifier, trusted: Sequence[SignedCheckpoint] = (),
                 policy: Policy = Policy(), *, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Verify a trail directory (see :func:`verify_source`)."""
    return verify_source(FileSource(trail_dir), verifier, trusted, policy, progress=progress)
