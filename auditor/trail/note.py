"""C2SP signed notes (c2sp.org/signed-note) and Ed25519 cosignatures (c2sp.org/tlog-cosignature).

A note is UTF-8 text ending in a newline, a blank line, then one signature line per key::

    <text>\\n
    \\n
    — <key name> base64(4-byte key ID || signature)\\n

* Ed25519 note signatures (type ``0x01``) sign the text itself;
  ``key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4]``.
* Ed25519 cosignatures (type ``0x04``, what witnesses return) sign
  ``"cosignature/v1\\ntime <T>\\n" || text`` and carry ``T`` (POSIX seconds) as 8 big-endian
  bytes before the signature; ``key ID = SHA-256(name || 0x0A || 0x04 || public key)[:4]``.

Verification follows the spec: signatures from unknown keys (name and ID not both matching a
known key) are ignored; a known key whose signature fails rejects the note; a note without any
verified signature from a known key is rejected. Public keys are exchanged as *vkeys*
(``<name>+<key ID hex>+base64(type || public key)``, the format of golang.org/x/mod/sumdb/note).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Callable, Iterable, Protocol, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditor.errors import TrailCorruption

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
DASH = "\u2014"
MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16


class NoteError(TrailCorruption):
    """A note that is malformed or whose signatures do not verify."""


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, alg: int, public: bytes) -> int:
    """The 32-bit key ID the signed-note spec recommends (and tlog-cosignature requires)."""
    return int.from_bytes(hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4], "big")


def valid_key_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name)


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: key name, key ID and the signature bytes after the ID."""

    name: str
    key_id: int
    data: bytes

    def line(self) -> str:
        blob = struct.pack(">I", self.key_id) + self.data
        return f"{DASH} {self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    signatures: tuple[Signature, ...] = ()

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()

    def __str__(self) -> str:
        return self.to_bytes().decode()

    def with_signatures(self, extra: Iterable[Signature]) -> Note:
        """The note plus ``extra`` signatures (a repeated (name, key ID) keeps the first)."""
        seen = {(s.name, s.key_id) for s in self.signatures}
        added = []
        for s in extra:
            if (s.name, s.key_id) not in seen:
                seen.add((s.name, s.key_id))
                added.append(s)
        return Note(self.text, self.signatures + tuple(added))

    @classmethod
    def parse(cls, data: bytes | str) -> Note:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if len(raw) > MAX_NOTE_BYTES:
            raise NoteError(f"note of {len(raw)} bytes is larger than {MAX_NOTE_BYTES}")
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("note is not valid UTF-8") from exc
        if any(ord(c) < 0x20 and c != "\n" for c in s):
            raise NoteError("note contains a control character")
        if not s.endswith("\n"):
            raise NoteError("note does not end in a newline")
        split = s.rfind("\n\n")
        if split < 0:
            raise NoteError("note has no blank line before its signatures")
        text, sig_block = s[:split + 1], s[split + 2:]
        lines = sig_block.split("\n")[:-1]
        if not lines:
            raise NoteError("note has no signature lines")
        if len(lines) > MAX_SIGNATURES:
            raise NoteError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
        return cls(text, tuple(_parse_signature(line) for line in lines))


def _parse_signature(line: str) -> Signature:
    if not line.startswith(DASH + " "):
        raise NoteError(f"malformed signature line {line[:40]!r}")
    name, _, b64 = line[2:].partition(" ")
    if not valid_key_name(name) or not b64 or " " in b64:
        raise NoteError(f"malformed signature line {line[:40]!r}")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"signature of {name} is not base64") from exc
    if len(blob) < 5:
        raise NoteError(f"signature of {name} is too short")
    return Signature(name, struct.unpack(">I", blob[:4])[0], blob[4:])


# ---------------------------------------------------------------- keys

class NoteVerifier(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> int: ...
    @property
    def alg(self) -> int: ...

    def verify(self, text: bytes, sig: bytes) -> bool: ...
    def vkey(self) -> str: ...


@dataclass(frozen=True)
class Ed25519Verifier:
    """Checks plain Ed25519 note signatures (the log's checkpoint signature)."""

    name: str
    public: Ed25519PublicKey
    alg: int = ALG_ED25519

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.alg, raw_public(self.public))

    def verify(self, text: bytes, sig: bytes) -> bool:
        try:
            self.public.verify(sig, text)
        except InvalidSignature:
            return False
        return True

    def vkey(self) -> str:
        return format_vkey(self.name, self.alg, raw_public(self.public))


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + text


@dataclass(frozen=True)
class CosignatureVerifier:
    """Checks timestamped Ed25519 cosignatures (a witness's)."""

    name: str
    public: Ed25519PublicKey
    alg: int = ALG_COSIGNATURE_V1

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.alg, raw_public(self.public))

    def verify(self, text: bytes, sig: bytes) -> bool:
        if len(sig) != 8 + 64:
            return False
        (timestamp,) = struct.unpack(">Q", sig[:8])
        if timestamp >= 1 << 63:
            return False
        try:
            self.public.verify(sig[8:], cosigned_message(text, timestamp))
        except InvalidSignature:
            return False
        return True

    def vkey(self) -> str:
        return format_vkey(self.name, self.alg, raw_public(self.public))


def cosignature_time(sig: Signature) -> datetime:
    """When a cosignature was made (its embedded POSIX timestamp)."""
    (timestamp,) = struct.unpack(">Q", sig.data[:8])
    return datetime.fromtimestamp(timestamp, tz=UTC)


class NoteSigner:
    """Signs notes with an Ed25519 key: plain signatures, or cosignatures (``cosign=True``)."""

    def __init__(self, name: str, private: Ed25519PrivateKey, *, cosign: bool = False,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if not valid_key_name(name):
            raise ValueError(f"{name!r} is not a valid key name (no spaces, no '+')")
        self.name = name
        self._private = private
        self.cosign = cosign
        self.clock = clock
        public = private.public_key()
        self.verifier: Ed25519Verifier | CosignatureVerifier = (
            CosignatureVerifier(name, public) if cosign else Ed25519Verifier(name, public))
        self.key_id = self.verifier.key_id

    def sign(self, text: str | bytes) -> Signature:
        data = text.encode() if isinstance(text, str) else text
        if self.cosign:
            timestamp = int(self.clock().timestamp())
            sig = struct.pack(">Q", timestamp) + self._private.sign(cosigned_message(data, timestamp))
        else:
            sig = self._private.sign(data)
        return Signature(self.name, self.key_id, sig)

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id:08x}, cosign={self.cosign})"


def sign_note(text: str, signer: NoteSigner) -> Note:
    if not text.endswith("\n"):
        raise ValueError("note text must end in a newline")
    return Note(text, (signer.sign(text),))


# ---------------------------------------------------------------- vkeys

def format_vkey(name: str, alg: int, public: bytes) -> str:
    return f"{name}+{key_id(name, alg, public):08x}+{base64.b64encode(bytes([alg]) + public).decode()}"


def parse_vkey(text: str) -> Ed25519Verifier | CosignatureVerifier:
    """A verifier from a vkey (``name+hash+base64(type || key)``); type 0x01 or 0x04."""
    vkey = text.strip()
    name, _, rest = vkey.partition("+")
    hash_hex, _, b64 = rest.partition("+")  # the base64 key data may itself hold '+'
    if not valid_key_name(name) or len(hash_hex) != 8 or not b64:
        raise ValueError(f"{vkey[:60]!r} is not a vkey (name+hash+key)")
    try:
        blob = base64.b64decode(b64, validate=True)
        want = int(hash_hex, 16)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"vkey {name}: malformed key data") from exc
    if len(blob) != 33 or blob[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise ValueError(f"vkey {name}: not an Ed25519 key (type 0x01) or cosignature key (type 0x04)")
    public = Ed25519PublicKey.from_public_bytes(blob[1:])
    verifier = (Ed25519Verifier(name, public) if blob[0] == ALG_ED25519 else CosignatureVerifier(name, public))
    if verifier.key_id != want:
        raise ValueError(f"vkey {name}: key hash {hash_hex} does not match the key")
    return verifier


# ---------------------------------------------------------------- verification

def verified_signatures(note: Note, verifiers: Sequence[NoteVerifier]) -> list[tuple[NoteVerifier, Signature]]:
    """The signatures of known keys that verify. A known key whose signature fails raises."""
    known = {(v.name, v.key_id): v for v in verifiers}
    text = note.text.encode()
    out = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue  # unknown keys are ignored, as the spec requires
        if not v.verify(text, sig.data):
            raise NoteError(f"bad signature by {sig.name} (key {sig.key_id:08x})")
        out.append((v, sig))
    return out


def open_note(data: bytes | str | Note, verifiers: Sequence[NoteVerifier]) -> tuple[Note, list[tuple[NoteVerifier,
                                                                                                       Signature]]]:
    """Parse and verify a note: at least one known key must have signed it, and none wrongly."""
    note = data if isinstance(data, Note) else Note.parse(data)
    good = verified_signatures(note, verifiers)
    if not good:
        names = ", ".join(sorted({s.name for s in note.signatures}))
        raise NoteError(f"signed by unknown key(s) only ({names})")
    return note, good
