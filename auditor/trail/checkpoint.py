"""Checkpoints: C2SP ``tlog-checkpoint`` bodies in C2SP signed notes, one log (origin) per chain.

The note text of a checkpoint of chain ``events/3`` signed under key name ``example.com/auditor``::

    example.com/auditor/events/3                    origin: <key name>/<chain id, %-escaped>
    1041                                            tree size: records in the chain
    hM2d...base64 RFC 6962 root...=                 root hash of the chain's record hashes
    time 2026-03-02T09:15:00.000000Z                extension: when it was signed (UTC)
    head q9Y...base64 hash of record 1040...=       extension: the chain's last record hash

followed by a blank line and ``— example.com/auditor <base64(key ID || Ed25519 signature)>``.
Witness cosignatures are further signature lines on the same text. The ``head`` line lets a
writer continue the chain (the next record's ``prev_hash``) from the checkpoint alone.

Stored with each checkpoint, outside the signed text (each part is checked against it):

* the chain's Merkle compact range at that size (``range``): its root must be the signed root;
* a consistency proof from the chain's previous checkpoint (``prev``, ``proof``): RFC 9162;
* for the file store, where the checkpoint was taken (``at``: segment, byte offset) and the
  earliest position a reopening writer must read from (``resume``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Sequence

from auditor.errors import TrailCorruption
from auditor.trail.chain import ChainHead
from auditor.trail.hashing import HASH_SIZE
from auditor.trail.keys import Signer, Verifier
from auditor.trail.merkle import MerkleRange, root_from_range, verify_consistency
from auditor.trail.note import Note, NoteError, NoteVerifier, Signature, open_note, verified_signatures

FORMAT = "auditor-checkpoint/2"
_TIME_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


# ---------------------------------------------------------------- origins

def _escape(chain_id: str) -> str:
    out = []
    for c in chain_id:
        if c in "%+" or c.isspace() or not c.isprintable():
            out.append("".join(f"%{b:02X}" for b in c.encode()))
        else:
            out.append(c)
    return "".join(out)


def _unescape(text: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%" and _is_hex(text[i + 1:i + 3]):
            raw.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            raw += text[i].encode()
            i += 1
    return raw.decode("utf-8", "replace")


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789ABCDEFabcdef" for c in s)


def origin_for(log_name: str, chain_id: str) -> str:
    """The checkpoint origin of a chain: the log's key name, a slash, the escaped chain id."""
    return f"{log_name}/{_escape(chain_id)}"


def chain_of(origin: str, log_name: str) -> str | None:
    """The chain id an origin names under ``log_name``, or None if it is not one of that log's."""
    prefix = log_name + "/"
    if not origin.startswith(prefix) or len(origin) == len(prefix):
        return None
    return _unescape(origin[len(prefix):])


# ---------------------------------------------------------------- the checkpoint body

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TrailCorruption(f"checkpoint {what} is not base64") from exc
    if len(data) != HASH_SIZE:
        raise TrailCorruption(f"checkpoint {what} is {len(data)} bytes, not {HASH_SIZE}")
    return data


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A chain's tree head: origin, size, root, plus the signing time and the last record hash."""

    origin: str
    size: int
    root: bytes
    head: bytes
    time: datetime
    extensions: tuple[str, ...] = ()  # other extension lines, kept verbatim

    def text(self) -> str:
        t = self.time.astimezone(UTC).strftime(_TIME_FMT)
        lines = [self.origin, str(self.size), _b64(self.root), f"time {t}", f"head {_b64(self.head)}",
                 *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not ln for ln in lines[:-1]):
            raise TrailCorruption("a checkpoint body has at least three non-empty lines, each ending in a newline")
        origin, size_text, root_text, *ext = lines[:-1]
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")) or not size_text.isascii():
            raise TrailCorruption(f"checkpoint size {size_text[:30]!r} is not a decimal without leading zeros")
        time: datetime | None = None
        head: bytes | None = None
        other = []
        for line in ext:
            key, _, value = line.partition(" ")
            if key == "time" and time is None:
                try:
                    time = datetime.strptime(value, _TIME_FMT).replace(tzinfo=UTC)
                except ValueError as exc:
                    raise TrailCorruption(f"checkpoint time {value[:40]!r} is malformed") from exc
            elif key == "head" and head is None:
                head = _unb64(value, "head hash")
            else:
                other.append(line)
        if time is None or head is None:
            raise TrailCorruption("the checkpoint has no 'time' or 'head' extension line: not an auditor checkpoint")
        return cls(origin, int(size_text), _unb64(root_text, "root hash"), head, time, tuple(other))


# ---------------------------------------------------------------- signed and stored forms

@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose log signature verified, with the chain it belongs to."""

    checkpoint: Checkpoint
    chain_id: str
    note: Note
    signer: str  # the log key name that signed it

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.chain_id, self.checkpoint.size, self.checkpoint.head)

    def cosignatures(self, witnesses: Sequence[NoteVerifier]) -> list[tuple[NoteVerifier, Signature]]:
        """Witness cosignatures on this checkpoint that verify (a known witness's bad one raises)."""
        return verified_signatures(self.note, witnesses)


def open_checkpoint(note: bytes | str | Note, verifier: Verifier) -> SignedCheckpoint:
    """Parse and verify a checkpoint note against the trusted log keys (raises TrailCorruption)."""
    parsed, good = open_note(note, verifier.notes)
    cp = Checkpoint.parse(parsed.text)
    for key, _ in good:
        chain = chain_of(cp.origin, key.name)
        if chain is not None:
            return SignedCheckpoint(cp, chain, parsed, key.name)
    raise NoteError(f"origin {cp.origin[:80]!r} is not a chain of the signing key "
                    f"{good[0][0].name!r} (origins are <key name>/<chain id>)")


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as stored or sent: the signed note plus its unsigned companions."""

    note: bytes
    range: tuple[bytes, ...] = ()
    prev_size: int = 0
    proof: tuple[bytes, ...] = ()
    at: tuple[int, int] | None = None
    resume: tuple[int, int] | None = None

    def to_json(self) -> str:
        doc: dict[str, Any] = {"format": FORMAT, "note": self.note.decode(),
                               "range": [_b64(h) for h in self.range],
                               "prev": self.prev_size, "proof": [_b64(h) for h in self.proof]}
        if self.at is not None:
            doc["at"] = list(self.at)
        if self.resume is not None:
            doc["resume"] = list(self.resume)
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> StoredCheckpoint:
        try:
            m = json.loads(text)
            if not isinstance(m, dict) or m.get("format") != FORMAT:
                raise ValueError(f"format {m.get('format') if isinstance(m, dict) else None!r}, not {FORMAT}")
            at, resume = m.get("at"), m.get("resume")
            return cls(note=str(m["note"]).encode(),
                       range=tuple(_unb64(h, "compact range") for h in m.get("range", [])),
                       prev_size=int(m.get("prev", 0)),
                       proof=tuple(_unb64(h, "proof node") for h in m.get("proof", [])),
                       at=(int(at[0]), int(at[1])) if at is not None else None,
                       resume=(int(resume[0]), int(resume[1])) if resume is not None else None)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise TrailCorruption(f"unreadable checkpoint entry ({exc})") from exc

    def open(self, verifier: Verifier, *, check_range: bool = True) -> SignedCheckpoint:
        """Verify the note (and, unless told not to, that the stored compact range leads to its root)."""
        signed = open_checkpoint(self.note, verifier)
        if check_range:
            problem = self.range_problem(signed)
            if problem:
                raise TrailCorruption(problem)
        return signed

    def range_problem(self, signed: SignedCheckpoint) -> str | None:
        if self.range and root_from_range(signed.size, self.range) != signed.root:
            return (f"the compact range stored with the checkpoint of {signed.chain_id} size {signed.size} does not "
                    "lead to its signed root")
        return None

    def proof_holds(self, previous: SignedCheckpoint, current: SignedCheckpoint) -> bool:
        """Does the stored consistency proof show ``current`` extends ``previous``?"""
        return (self.prev_size == previous.size
                and verify_consistency(previous.size, current.size, previous.root, current.root, self.proof))


def make_checkpoint(head: ChainHead, rng: MerkleRange, now: datetime, signer: Signer) -> Note:
    """Sign the checkpoint of a chain at ``head`` (``rng`` is its Merkle range at that size)."""
    if rng.size != head.size:
        raise ValueError(f"the Merkle range holds {rng.size} leaves, the chain {head.size}")
    cp = Checkpoint(origin_for(signer.name, head.chain_id), head.size, rng.root(), head.head_hash, now)
    text = cp.text()
    return Note(text, (signer.note_signer.sign(text),))
