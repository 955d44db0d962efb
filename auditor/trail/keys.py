"""Keys: the Ed25519 checkpoint-signing pair and the HMAC pseudonymisation key.

A key directory (``auditor keys generate --out DIR``) holds::

    signing.key      Ed25519 private key, PKCS#8 PEM          (0600)
    signing.pub      Ed25519 public key, SubjectPublicKeyInfo  (0600; copy it to verifiers)
    pseudonym.key    32 random bytes, hex                      (0600)
    keys.json        key ids                                   (0600)

The directory is 0700. Key ids are the first 8 bytes (hex) of SHA-256 of the public key, and of
``"auditor-pseudonym-key\\0" || key`` for the HMAC key. Commands find the directory from
``--keys DIR`` or ``$AUDITOR_KEYS``; a missing key is a ConfigError that says how to make one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditor.errors import ConfigError

ENV_VAR = "AUDITOR_KEYS"
SIGNING_KEY, SIGNING_PUB = "signing.key", "signing.pub"
PSEUDONYM_KEY, KEYS_JSON = "pseudonym.key", "keys.json"
HOW_TO = "make one with `auditor keys generate --out DIR` and pass --keys DIR or set AUDITOR_KEYS"


def public_key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:8].hex()


def pseudonym_key_id(key: bytes) -> str:
    return hashlib.sha256(b"auditor-pseudonym-key\x00" + key).digest()[:8].hex()


class Pseudonymizer:
    """Keyed pseudonyms: hex of the first 16 bytes of HMAC-SHA256(key, identifier).

    Pseudonyms are memoised (actors and busy subjects recur constantly); the memo is bounded
    and simply dropped when full, so memory stays flat however many subjects pass through.
    """

    __slots__ = ("key_id", "_key", "_memo")
    MEMO_MAX = 100_000

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ConfigError("the pseudonymisation key must be at least 32 bytes")
        self._key = key
        self.key_id = pseudonym_key_id(key)
        self._memo: dict[str, str] = {}

    def __call__(self, identifier: str) -> str:
        hit = self._memo.get(identifier)
        if hit is None:
            if len(self._memo) >= self.MEMO_MAX:
                self._memo.clear()
            hit = self._memo[identifier] = hmac.digest(self._key, identifier.encode(), "sha256")[:16].hex()
        return hit

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id!r})"


class Signer:
    __slots__ = ("key_id", "_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = public_key_id(key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"


@dataclass(frozen=True)
class Verifier:
    """Checks signatures by key id; knows one or more public keys (for rotation)."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def of(cls, *publics: Ed25519PublicKey) -> Verifier:
        return cls({public_key_id(p): p for p in publics})

    @classmethod
    def from_file(cls, path: Path) -> Verifier:
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"public key {path} not found; {HOW_TO}") from None
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigError(f"{path} is not an Ed25519 public key")
        return cls.of(public)

    def knows(self, key_id: str) -> bool:
        return key_id in self.keys

    def verify(self, key_id: str, message: bytes, signature: bytes) -> bool:
        public = self.keys.get(key_id)
        if public is None:
            return False
        try:
            public.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _write_private(path: Path, data: bytes) -> None:
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
    def generate(cls, out_dir: Path) -> KeyRing:
        """Write a new key set to ``out_dir`` (created 0700; refuses to overwrite or enter a trail)."""
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
        _write_private(out_dir / SIGNING_KEY, private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        _write_private(out_dir / SIGNING_PUB, private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        _write_private(out_dir / PSEUDONYM_KEY, hkey.hex().encode() + b"\n")
        ids = {"signing_key_id": public_key_id(private.public_key()),
               "pseudonym_key_id": pseudonym_key_id(hkey)}
        _write_private(out_dir / KEYS_JSON, json.dumps(ids, indent=2).encode() + b"\n")
        return cls.load(out_dir)

    @classmethod
    def load(cls, keys_dir: Path) -> KeyRing:
        keys_dir = Path(keys_dir)
        if not keys_dir.is_dir():
            raise ConfigError(f"key directory {keys_dir} does not exist; {HOW_TO}")
        signer = pseudonymizer = None
        publics: list[Ed25519PublicKey] = []
        if (keys_dir / SIGNING_KEY).exists():
            _check_private(keys_dir / SIGNING_KEY)
            try:
                private = serialization.load_pem_private_key((keys_dir / SIGNING_KEY).read_bytes(), None)
            except ValueError as exc:
                raise ConfigError(f"{keys_dir / SIGNING_KEY} is not a PEM private key: {exc}") from exc
            if not isinstance(private, Ed25519PrivateKey):
                raise ConfigError(f"{keys_dir / SIGNING_KEY} is not an Ed25519 key")
            signer = Signer(private)
            publics.append(private.public_key())
        elif (keys_dir / SIGNING_PUB).exists():
            publics.extend(Verifier.from_file(keys_dir / SIGNING_PUB).keys.values())
        if (keys_dir / PSEUDONYM_KEY).exists():
            _check_private(keys_dir / PSEUDONYM_KEY)
            try:
                pseudonymizer = Pseudonymizer(bytes.fromhex((keys_dir / PSEUDONYM_KEY).read_text().strip()))
            except ValueError as exc:
                raise ConfigError(f"{keys_dir / PSEUDONYM_KEY} must hold the key as hex") from exc
        if signer is None and pseudonymizer is None and not publics:
            raise ConfigError(f"no keys in {keys_dir}; {HOW_TO}")
        return cls(keys_dir, signer, pseudonymizer, Verifier.of(*publics))

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
