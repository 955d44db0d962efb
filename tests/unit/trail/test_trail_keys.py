"""Key generation, loading, permissions and pseudonyms."""

from __future__ import annotations

import stat

import pytest

from auditor.errors import ConfigError
from auditor.trail import KeyRing, Verifier
from auditor.trail.keys import SIGNING_PUB, SIGNING_VKEY


def test_generate_writes_owner_only_files_and_key_ids(tmp_path):
    keys = KeyRing.generate(tmp_path / "keys")
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for f in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert len(keys.signer.key_id) == 16 and len(keys.pseudonymizer.key_id) == 16
    again = KeyRing.load(tmp_path / "keys")
    assert again.signer.key_id == keys.signer.key_id
    assert again.pseudonymizer("u-1") == keys.pseudonymizer("u-1") != keys.pseudonymizer("u-2")


def test_signatures_verify_with_the_public_key_only(tmp_path):
    keys = KeyRing.generate(tmp_path / "keys")
    sig = keys.signer.note_signer.sign("origin\n")
    for source in (SIGNING_PUB, SIGNING_VKEY):  # PEM (named from keys.json) or vkey
        (note,) = Verifier.from_file(tmp_path / "keys" / source).notes
        assert (note.name, note.key_id) == (sig.name, sig.key_id) == (keys.signer.name, sig.key_id)
        assert note.verify(b"origin\n", sig.data)
        assert not note.verify(b"other\n", sig.data)


def test_key_name_is_chosen_at_generation_and_found_by_verifiers(tmp_path):
    keys = KeyRing.generate(tmp_path / "keys", "example.com/auditor")
    assert keys.signer.name == "example.com/auditor"
    assert KeyRing.load(tmp_path / "keys").signer.name == "example.com/auditor"
    assert Verifier.from_file(tmp_path / "keys" / SIGNING_PUB).notes[0].name == "example.com/auditor"
    assert (tmp_path / "keys" / SIGNING_VKEY).read_text().startswith("example.com/auditor+")
    with pytest.raises(ConfigError, match="without spaces"):
        KeyRing.generate(tmp_path / "k2", "has space")
    default = KeyRing.generate(tmp_path / "k3")
    assert default.signer.name == f"auditor/{default.signer.key_id}"


def test_missing_keys_say_how_to_make_them(tmp_path):
    with pytest.raises(ConfigError, match="auditor keys generate --out DIR"):
        KeyRing.resolve(None, env={})
    with pytest.raises(ConfigError, match="auditor keys generate"):
        KeyRing.load(tmp_path / "nope")


def test_env_var_finds_the_key_directory(tmp_path):
    KeyRing.generate(tmp_path / "k")
    assert KeyRing.resolve(None, env={"AUDITOR_KEYS": str(tmp_path / "k")}).signer


def test_refuses_to_overwrite_or_to_generate_inside_a_trail(tmp_path):
    KeyRing.generate(tmp_path / "k")
    with pytest.raises(ConfigError, match="already holds keys"):
        KeyRing.generate(tmp_path / "k")
    (tmp_path / "trail").mkdir()
    (tmp_path / "trail" / "trail.json").write_text("{}")
    with pytest.raises(ConfigError, match="inside the trail"):
        KeyRing.generate(tmp_path / "trail" / "keys")


def test_group_readable_private_key_is_refused(tmp_path):
    KeyRing.generate(tmp_path / "k")
    (tmp_path / "k" / "signing.key").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyRing.load(tmp_path / "k")
