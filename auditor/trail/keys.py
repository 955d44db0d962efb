"""Keys: the Ed25519 checkpoint-signing pair and the HMAC pseudonymisation key.

A key directory (``auditor keys generate --out DIR``) holds::

    signing.key      Ed25519 private key, PKCS#8 PEM          (0600)
    signing.pub      Ed25519 public key, SubjectPublicKeyInfo  (0600; copy it to verifiers)
    signing.vkey     the same public key as a signed-note vkey (name+hash+key; for Go tooling)
    pseudonym.key    32 random bytes, hex                      (0600)
    keys.json        key ids and the signing key's note name   (0600)

The directory is 0700. Key ids are the first 8 bytes (hex) of SHA-256 of the public key, and of
``"auditor-pseudonym-key\\0" || key`` for the HMAC key. The signing key signs checkpoints as
C2SP signed notes under a *key name* (``--name``, default ``auditor/<key id>``); a checkpoint's
origin is ``<key name>/<chain id>``. Commands find the directory from ``--keys DIR`` or
``$AUDITOR_KEYS``; a missing key is a ConfigError that says how to make one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditor.errors import ConfigError
from auditor.memo import ENTRY_OVERHEAD, BytesMemo
from auditor.trail.note import Ed25519Verifier, NoteSigner, parse_vkey, raw_public, valid_key_name

ENV_VAR = "AUDITOR_KEYS"
SIGNING_KEY, SIGNING_PUB, SIGNING_VKEY = "signing.key", "signing.pub", "signing.vkey"
PSEUDONYM_KEY, KEYS_JSON = "pseudonym.key", "keys.json"
HOW_TO = "make one with `auditor keys generate --out DIR` and pass --keys DIR or set AUDITOR_KEYS"


def public_key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:8].hex()


def default_key_name(public: Ed25519PublicKey) -> str:
    """The note key name of a signing key generated without ``--name``."""
    return f"auditor/{public_key_id(public)}"


def fingerprint(public: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: what to compare with a published key."""
    return hashlib.sha256(raw_public(public)).hexdigest()


def pseudonym_key_id(key: bytes) -> str:
    return hashlib.sha256(b"auditor-pseudonym-key\x00" + key).digest()[:8].hex()


class Pseudonymizer:
    """Keyed pseudonyms: hex of the first 16 bytes of HMAC-SHA256(key, identifier).

    Pseudonyms are memoised (actors and busy subjects recur constantly); the memo is bounded by
    bytes (:class:`~auditor.memo.BytesMemo`: identifiers over ``MEMO_MAX_ID`` characters are never
    kept) and dropped when full, so memory stays flat however many or however long the ids.
    """

    __slots__ = ("key_id", "_key", "_memo", "_hits", "known")
    MEMO_MAX_BYTES = 16 * 1024 * 1024
    MEMO_MAX_ID = 1024

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ConfigError("the pseudonymisation key must be at least 32 bytes")
        self._key = key
        self.key_id = pseudonym_key_id(key)
        self._memo: BytesMemo[str, str] = BytesMemo(self.MEMO_MAX_BYTES, self.MEMO_MAX_ID + ENTRY_OVERHEAD + 64)
        self._hits = self._memo.data
        #: identifier -> pseudonym for what the memo holds: a caller on a hot path may look up here
        #: first and call only on a miss (read only; the same dict as the memo's)
        self.known: Mapping[str, str] = self._hits

    def __call__(self, identifier: str) -> str:
        hit = self._hits.get(identifier)
        if hit is None:
            hit = hmac.digest(self._key, identifier.encode(), "sha256")[:16].hex()
            self._memo.put(identifier, hit, len(identifier) + 64)
        return hit

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id!r})"


class Signer:
    """The trail's checkpoint-signing key, with the note key name it signs under."""

    __slots__ = ("key_id", "name", "_key", "note_signer")

    def __init__(self, key: Ed25519PrivateKey, name: str | None = None) -> None:
        self._key = key
        self.key_id = public_key_id(key.public_key())
        self.name = name or default_key_name(key.public_key())
        self.note_signer = NoteSigner(self.name, key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r}, name={self.name!r})"


@dataclass(frozen=True)
class Verifier:
    """The log keys a verifier trusts, as note verifiers (name + key); several for rotation."""

    notes: tuple[Ed25519Verifier, ...] = ()

    @classmethod
    def of(cls, *publics: Ed25519PublicKey, name: str | None = None) -> Verifier:
        return cls(tuple(Ed25519Verifier(name or default_key_name(p), p) for p in publics))

    @classmethod
    def from_file(cls, path: Path) -> Verifier:
        """A PEM public key (named as in a keys.json beside it, else by default), or vkey lines."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"public key {path} not found; {HOW_TO}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read public key {path}: {exc}") from exc
        if b"-----BEGIN" not in data:
            try:
                found = [parse_vkey(line) for line in data.decode().splitlines() if line.strip()]
            except (ValueError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path} is neither a PEM public key nor vkey lines: {exc}") from exc
            notes = tuple(v for v in found if isinstance(v, Ed25519Verifier))
            if not notes:
                raise ConfigError(f"{path} holds no Ed25519 log key (type 0x01 vkey)")
            return cls(notes)
        try:
            public = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigError(f"{path} is not an Ed25519 public key")
        return cls.of(public, name=_name_beside(path))

    def __bool__(self) -> bool:
        return bool(self.notes)


def _name_beside(path: Path) -> str | None:
    try:
        name = json.loads((path.parent / KEYS_JSON).read_text()).get("signing_key_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and valid_key_name(name) else None


def write_private(path: Path, data: bytes) -> None:
    """A new file (never over an existing one) only its owner may read and write (0600 whatever the
    umask), written through to the disk. The trail's and the witness's key files."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)


def _inside_trail(path: Path) -> Path | None:
    for parent in [path, *path.parents]:
        if (parent / "trail.json").exists():
            return parent
    return None


class KeyRing:
    """The keys a process uses; each part is loaded on demand and may be absent."""

    def __init__(self, directory: Path | None, signer: Signer | None, pseudonymizer: Pseudonymizer | None,
                 verifier: Verifier) -> None:
        self.directory = directory
        self._signer, self._pseudonymizer, self.verifier = signer, pseudonymizer, verifier

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            raise ConfigError(f"no signing key in {self.directory}; {HOW_TO}")
        return self._signer

    @property
    def pseudonymizer(self) -> Pseudonymizer:
        if self._pseudonymizer is None:
            raise ConfigError(f"no pseudonymisation key in {self.directory}; {HOW_TO}")
        return self._pseudonymizer

    @classmethod
    def generate(cls, out_dir: Path, name: str | None = None) -> KeyRing:
        """Write a new key set to ``out_dir`` (created 0700; refuses to overwrite or enter a trail).

        ``name`` is the signing key's note name (default ``auditor/<key id>``); checkpoint origins
        start with it, so keep it when rotating keys.
        """
        if name is not None and not valid_key_name(name):
            raise ConfigError(f"key name {name!r} must be non-empty, without spaces or '+' "
                              "(e.g. example.com/auditor)")
        out_dir = Path(out_dir).absolute()
        trail = _inside_trail(out_dir)
        if trail is not None:
            raise ConfigError(f"refusing to put keys inside the trail directory {trail}: "
                              "anyone who can read the trail could forge its checkpoints")
        if (out_dir / SIGNING_KEY).exists() or (out_dir / PSEUDONYM_KEY).exists():
            raise ConfigError(f"{out_dir} already holds keys; choose another --out or remove them")
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(out_dir, 0o700)
        private = Ed25519PrivateKey.generate()
        hkey = secrets.token_bytes(32)
        write_private(out_dir / SIGNING_KEY, private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        write_private(out_dir / SIGNING_PUB, private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        write_private(out_dir / PSEUDONYM_KEY, hkey.hex().encode() + b"\n")
        signer = Signer(private, name)
        write_private(out_dir / SIGNING_VKEY, signer.note_signer.verifier.vkey().encode() + b"\n")
        ids = {"signing_key_id": public_key_id(private.public_key()), "signing_key_name": signer.name,
               "pseudonym_key_id": pseudonym_key_id(hkey)}
        write_private(out_dir / KEYS_JSON, json.dumps(ids, indent=2).encode() + b"\n")
        return cls.load(out_dir)

    @classmethod
    def load(cls, keys_dir: Path) -> KeyRing:
        keys_dir = Path(keys_dir)
        if not keys_dir.is_dir():
            raise ConfigError(f"key directory {keys_dir} does not exist; {HOW_TO}")
        signer = pseudonymizer = None
        verifier = Verifier()
        if (keys_dir / SIGNING_KEY).exists():
            _check_private(keys_dir / SIGNING_KEY)
            try:
                private = serialization.load_pem_private_key((keys_dir / SIGNING_KEY).read_bytes(), None)
            except ValueError as exc:
                raise ConfigError(f"{keys_dir / SIGNING_KEY} is not a PEM private key: {exc}") from exc
            if not isinstance(private, Ed25519PrivateKey):
                raise ConfigError(f"{keys_dir / SIGNING_KEY} is not an Ed25519 key")
            signer = Signer(private, _name_beside(keys_dir / SIGNING_KEY))
            verifier = Verifier((signer.note_signer.verifier,))  # type: ignore[arg-type]
        elif (keys_dir / SIGNING_PUB).exists():
            verifier = Verifier.from_file(keys_dir / SIGNING_PUB)
        if (keys_dir / PSEUDONYM_KEY).exists():
            _check_private(keys_dir / PSEUDONYM_KEY)
            try:
                pseudonymizer = Pseudonymizer(bytes.fromhex((keys_dir / PSEUDONYM_KEY).read_text().strip()))
            except ValueError as exc:
                raise ConfigError(f"{keys_dir / PSEUDONYM_KEY} must hold the key as hex") from exc
        if signer is None and pseudonymizer is None and not verifier:
            raise ConfigError(f"no keys in {keys_dir}; {HOW_TO}")
        return cls(keys_dir, signer, pseudonymizer, verifier)

    @classmethod
    def resolve(cls, keys_dir: str | Path | None, env: Mapping[str, str] | None = None) -> KeyRing:
        """Load from ``--keys`` or else ``$AUDITOR_KEYS``; a ConfigError says how to make keys."""
        env = os.environ if env is None else env
        chosen = keys_dir or env.get(ENV_VAR)
        if not chosen:
            raise ConfigError(f"no key directory given; {HOW_TO}")
        return cls.load(Path(chosen))


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
