"""The witness's own key: an Ed25519 private key (PEM, 0600) and its cosignature vkey.

    witness.key    PKCS#8 PEM, 0600, in a 0700 directory
    witness.vkey   <name>+<key ID>+base64(0x04 || public key): give it to verifiers
    witness.json   {"name": ...}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditor.errors import ConfigError
from auditor.trail.keys import write_private
from auditor.trail.note import NoteSigner, valid_key_name

KEY, VKEY, META = "witness.key", "witness.vkey", "witness.json"


def generate(out_dir: Path, name: str) -> NoteSigner:
    if not valid_key_name(name):
        raise ConfigError(f"witness name {name!r} must be non-empty, without spaces or '+' "
                          "(e.g. dpo.example.com/witness)")
    out_dir = Path(out_dir)
    if (out_dir / KEY).exists():
        raise ConfigError(f"{out_dir} already holds a witness key; choose another --out")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)
    private = Ed25519PrivateKey.generate()
    write_private(out_dir / KEY, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    signer = NoteSigner(name, private, cosign=True)
    write_private(out_dir / VKEY, signer.verifier.vkey().encode() + b"\n")
    write_private(out_dir / META, json.dumps({"name": name}).encode() + b"\n")
    return signer


def load(key_dir: Path) -> NoteSigner:
    key_dir = Path(key_dir)
    try:
        name = json.loads((key_dir / META).read_text())["name"]
        data = (key_dir / KEY).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no witness key in {key_dir}; make one with `auditor witness keygen --out DIR "
                          "--name NAME`") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read the witness key in {key_dir}: {exc}") from exc
    mode = (key_dir / KEY).stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{key_dir / KEY} is readable by others (mode {mode:o}); run: chmod 600 {key_dir / KEY}")
    private = serialization.load_pem_private_key(data, None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(f"{key_dir / KEY} is not an Ed25519 key")
    return NoteSigner(name, private, cosign=True)
