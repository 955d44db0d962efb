"""Evidence archives: one audit record with everything needed to check it offline.

An archive is a zip file (stored, not compressed) of these parts::

    SUMMARY.txt                 one page for a person: what happened, the verdict, real times
    manifest.json               format, chain, seq, key fingerprint, and the SHA-256 of every part
    record/record.avro          the record's canonical bytes (Avro; its hash is a Merkle leaf)
    record/record.json          every fact the record stores, readable
    proof/inclusion.json        the record's RFC 9162 audit path in its chain's tree
    checkpoint/checkpoint.note  the C2SP signed checkpoint, with any witness cosignatures
    keys/log.pem, keys/log.vkey the log's public key (PEM and signed-note vkey)
    keys/witnesses.vkey         the witnesses whose cosignatures the archive carries (if any)
    pack/<pack id>.yaml         the policy pack at the content hash the record names

:func:`verify_evidence` checks each part against the others in dependency order and names the
part that fails: the key parses and matches its vkey; the checkpoint's signature (and each
witness cosignature) verifies with them; the record hashes to itself; the audit path leads from
it to the signed root; the readable facts, the pack's content hash and the summary equal what
the record implies; the manifest lists exactly these parts with their hashes. A verifier who
knows the published key passes it (``--pubkey``) and the archive's key must be that one.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditor.errors import PolicyError, TrailCorruption, TrailError
from auditor.trail.canonical import enc_id, record_from_bytes
from auditor.trail.chain import recompute_hash
from auditor.trail.checkpoint import SignedCheckpoint, open_checkpoint
from auditor.trail.keys import Verifier, fingerprint
from auditor.trail.merkle import root_from_inclusion
from auditor.trail.note import (
    CosignatureVerifier,
    Ed25519Verifier,
    NoteVerifier,
    cosignature_time,
    parse_vkey,
    verified_signatures,
)
from auditor.trail.proof import make_proof
from auditor.trail.record import AuditRecord
from auditor.trail.render import organisation_text, record_json
from auditor.trail.source import Issue, TrailSource, as_source

FORMAT = "auditor-evidence/1"
SUMMARY, MANIFEST = "SUMMARY.txt", "manifest.json"
RECORD_AVRO, RECORD_JSON = "record/record.avro", "record/record.json"
INCLUSION, CHECKPOINT = "proof/inclusion.json", "checkpoint/checkpoint.note"
LOG_PEM, LOG_VKEY, WITNESS_VKEYS = "keys/log.pem", "keys/log.vkey", "keys/witnesses.vkey"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # zip member times: the archive's bytes depend on its content only


# ---------------------------------------------------------------- finding the record and its pack

def find_record(source: TrailSource, *, event_id: str | None = None, chain: str | None = None,
                seq: int | None = None) -> AuditRecord:
    """The record of an event id, or at chain + seq (raises TrailError when absent)."""
    token = enc_id(event_id) if event_id is not None else None
    for chunk in source.chunks():
        if isinstance(chunk, Issue):
            continue
        for f in chunk.frames:
            if event_id is None:
                if f.chain_id == chain and f.seq == seq:
                    return record_from_bytes(chunk.buf[f.start:f.end])
                continue
            data = chunk.buf[f.start:f.end]
            if token is not None and token in data:
                record = record_from_bytes(data)
                if record.event_id == event_id:
                    return record
    what = f"event {event_id}" if event_id is not None else f"{chain} seq {seq}"
    raise TrailError(f"the trail holds no record of {what}")


@lru_cache(maxsize=16)
def pack_hash_of(data: bytes) -> str:
    """A pack file's content hash, exactly as the policy loader computes it (memoised by the bytes:
    verifying an archive again, or damaged elsewhere, does not parse the same pack again)."""
    from auditor.policy.loader import content_hash
    from auditor.policy.yamlsrc import load_yaml

    with tempfile.NamedTemporaryFile(suffix=".yaml") as tmp:
        tmp.write(data)
        tmp.flush()
        return content_hash(load_yaml(Path(tmp.name)))


def find_pack(pack_hash: str, pack_dirs: Sequence[Path]) -> tuple[str, bytes]:
    """(file name, bytes) of the pack whose content hash is ``pack_hash``: bundled packs first,
    then every *.yaml / *.yml in ``pack_dirs``."""
    from auditor.policy.loader import packs_dir

    candidates = [*sorted(packs_dir().glob("*.yaml"))]
    for d in pack_dirs:
        if not Path(d).is_dir():
            raise TrailError(f"--packs {d} is not a directory")
        candidates += sorted([*Path(d).rglob("*.yaml"), *Path(d).rglob("*.yml")])
    for path in candidates:
        data = path.read_bytes()
        try:
            if pack_hash_of(data) == pack_hash:
                return path.name, data
        except PolicyError:
            continue
    raise TrailError(f"no pack file with content hash {pack_hash} among the bundled packs"
                     + (f" and {', '.join(map(str, pack_dirs))}" if pack_dirs else "")
                     + "; pass the directory that keeps that pack version with --packs DIR")


# ---------------------------------------------------------------- rendering

def record_facts(record: AuditRecord) -> str:
    """Every fact the record stores, as indented JSON (the archive's record/record.json), with the
    keys of the audit record schema."""
    return json.dumps(record_json(record), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _t(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_summary(record: AuditRecord, cp: SignedCheckpoint, log_key: Ed25519PublicKey,
                   cosigners: Sequence[tuple[str, datetime]], pack_name: str | None) -> str:
    """The one-page summary: a function of the verified parts only, so it is checked too."""
    f, d, j = record.facts, record.decision, record.rejection
    lines = ["AUDIT EVIDENCE", "=" * 14, "",
             f"Record        {record.chain_id} seq {record.seq}"
             + (f", event {record.event_id}" if record.event_id else ""),
             f"Source        {record.source}  (input digest sha256 {record.input_digest.hex()[:16]}...)"]
    if f is not None:
        lines += [
            f"What          {f.kind.value} of {', '.join(f.data_categories)} for the purpose '{f.purpose}'",
            f"When          {_t(f.occurred_at)}",
            f"Who acted     {f.actor_type.value}" + (f", role {f.actor_role}" if f.actor_role else "")
            + f" (actor pseudonym {f.actor_pseudonym})",
            f"Organisation  {organisation_text(record)}",
            f"Whose data    subject pseudonym {f.subject_pseudonym} (HMAC key {record.pseudonym_key_id})",
        ]
        if f.recipient is not None:
            lines.append(f"Disclosed to  {f.recipient.type} '{f.recipient.id}'"
                         + (f" in {f.recipient.country}" if f.recipient.country else ""))
        if f.cross_border:
            lines.append(f"Transfer      cross-border to {f.destination_country or '?'}, safeguard {f.safeguard.value}")
        basis = f", basis {f.legal_basis}" if f.legal_basis else ""
        ref = f", reference {record.legal_request_reference}" if record.legal_request_reference is not None else ""
        lines.append(f"Legal request {f.legal_request_type.value}{ref}{basis}")
    if d is not None:
        lines.append(f"Verdict       {d.verdict.value} under pack {d.pack_id} ({d.pack_hash})")
        if d.permitted_by:
            lines.append(f"Permitted by  rule {d.permitted_by}, clause {d.permitted_clause}")
        for v in d.violations:
            lines.append(f"Violation     rule {v.rule_id} (clause {v.clause}, {v.severity}): {v.reason}")
        lines.append(f"Pack file     pack/{pack_name}" if pack_name else "Pack file     (none)")
    if j is not None:
        lines.append(f"Rejected      {j.reason}: {j.message}")
    lines += [
        f"Audited       {_t(record.processed_at)} by {record.instance_id} (auditor {record.auditor_version})",
        "",
        f"Integrity     record hash {record.record_hash.hex()}",
        f"              leaf {record.seq} of {cp.size} in the Merkle tree of chain {cp.chain_id}",
        f"Checkpoint    {cp.checkpoint.origin} size {cp.size}, signed {_t(cp.checkpoint.time)}",
        f"              root {cp.root.hex()}",
        f"Log key       {cp.signer}, fingerprint (SHA-256 of the Ed25519 key) {fingerprint(log_key)}",
    ]
    if cosigners:
        lines += [f"Witnessed by  {name}, cosigned {_t(t)}" for name, t in cosigners]
    else:
        lines.append("Witnessed by  (no witness cosignature in this archive)")
    lines += ["", "Check it offline:  auditor verify-evidence THIS.zip --pubkey <the log's published key>",
              "Compare the fingerprint above with the one the organisation publishes."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- building

def build_evidence(trail: TrailSource | Path | str, verifier: Verifier, *, event_id: str | None = None,
                   chain: str | None = None, seq: int | None = None, pack_dirs: Sequence[Path] = (),
                   witnesses: Sequence[NoteVerifier] = (), now: datetime | None = None) -> bytes:
    source = as_source(trail)
    record = find_record(source, event_id=event_id, chain=chain, seq=seq)
    proof = make_proof(source, record.seq, record.chain_id, verifier)
    cp = open_checkpoint(proof.checkpoint, verifier)
    log_key = next(k for k in verifier.notes if k.name == cp.signer)
    cosigners = [(s.name, cosignature_time(s)) for _, s in cp.cosignatures(witnesses)]
    pack_name = pack_bytes = None
    if record.decision is not None:
        pack_name, pack_bytes = find_pack(record.decision.pack_hash, pack_dirs)
        pack_name = f"{record.decision.pack_id}.yaml"
    parts: dict[str, bytes] = {
        SUMMARY: render_summary(record, cp, log_key.public, cosigners, pack_name).encode(),
        RECORD_AVRO: proof.record_bytes,
        RECORD_JSON: record_facts(record).encode(),
        INCLUSION: _inclusion_json(record, proof.tree_size, proof.audit_path),
        CHECKPOINT: cp.note.to_bytes(),
        LOG_PEM: _pem(log_key.public),
        LOG_VKEY: (log_key.vkey() + "\n").encode(),
    }
    used = [w for w in witnesses if any(w.name == n for n, _ in cosigners)]
    if used:
        parts[WITNESS_VKEYS] = "".join(w.vkey() + "\n" for w in used).encode()
    if pack_name is not None and pack_bytes is not None:
        parts[f"pack/{pack_name}"] = pack_bytes
    manifest = {"format": FORMAT, "created_at": (now or datetime.now(UTC)).isoformat(), "chain": record.chain_id,
                "seq": record.seq, "event_id": record.event_id, "log_key_fingerprint": fingerprint(log_key.public),
                "parts": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(parts.items())}}
    return pack_archive({MANIFEST: json.dumps(manifest, indent=2).encode() + b"\n", **parts})


def pack_archive(parts: dict[str, bytes]) -> bytes:
    """The canonical zip of the parts: manifest first, then by name, stored, fixed times."""
    out = io.BytesIO()
    order = sorted(parts, key=lambda n: (n != MANIFEST, n))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name in order:
            z.writestr(zipfile.ZipInfo(name, _FIXED_TIME), parts[name])
    return out.getvalue()


def _pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _inclusion_json(record: AuditRecord, size: int, path: Iterable[bytes]) -> bytes:
    return (json.dumps({"chain": record.chain_id, "seq": record.seq, "tree_size": size,
                        "leaf_hash": record.record_hash.hex(), "audit_path": [h.hex() for h in path]},
                       indent=2) + "\n").encode()


# ---------------------------------------------------------------- verifying

@dataclass(frozen=True)
class Finding:
    part: str
    message: str

    def __str__(self) -> str:
        return f"{self.part}: {self.message}"


class _Fail(Exception):
    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


def _read_parts(data: bytes) -> dict[str, bytes]:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # zipfile raises many kinds on damaged input; all mean the same here
        raise _Fail("archive", f"not a readable zip archive ({exc.__class__.__name__}: {exc})") from exc
    parts: dict[str, bytes] = {}
    with z:
        names = z.namelist()
        if len(set(names)) != len(names):
            raise _Fail("archive", "a part appears twice")
        for name in names:
            try:
                parts[name] = z.read(name)
            except Exception as exc:  # a bad CRC, a damaged local header, an unsupported version ...
                raise _Fail(name, f"damaged in the archive ({exc.__class__.__name__}: {exc})") from exc
    return parts


def _need(parts: dict[str, bytes], name: str) -> bytes:
    if name not in parts:
        raise _Fail(name, "missing from the archive")
    return parts[name]


def verify_evidence(data: bytes, pinned: Verifier | None = None) -> tuple[list[Finding], AuditRecord | None]:
    """Findings (empty when the archive holds) and the record, from the archive alone."""
    try:
        record = _verify(data, pinned)
    except _Fail as fail:
        return [Finding(fail.part, str(fail))], None
    return [], record


def _verify(data: bytes, pinned: Verifier | None) -> AuditRecord:
    parts = _read_parts(data)
    try:
        manifest = json.loads(_need(parts, MANIFEST))
        if manifest.get("format") != FORMAT or not isinstance(manifest.get("parts"), dict):
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, AttributeError) as exc:
        raise _Fail(MANIFEST, f"unreadable ({exc})") from exc
    # the log key (PEM and vkey) and the checkpoint it signed: the signature decides which is wrong
    try:
        public = serialization.load_pem_public_key(_need(parts, LOG_PEM))
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError("not an Ed25519 key")
    except ValueError as exc:
        raise _Fail(LOG_PEM, f"not an Ed25519 public key ({exc})") from exc
    try:
        vkey = parse_vkey(_need(parts, LOG_VKEY).decode())
        if not isinstance(vkey, Ed25519Verifier):
            raise ValueError("not a log key (type 0x01)")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Fail(LOG_VKEY, str(exc)) from exc
    note = _need(parts, CHECKPOINT)
    try:
        cp = open_checkpoint(note, Verifier((vkey,)))
    except TrailCorruption as exc:
        try:
            open_checkpoint(note, Verifier((Ed25519Verifier(vkey.name, public),)))
        except TrailCorruption:
            raise _Fail(CHECKPOINT, str(exc)) from exc
        raise _Fail(LOG_VKEY, "is not the key that signed the checkpoint (keys/log.pem is)") from exc
    if fingerprint(vkey.public) != fingerprint(public):
        raise _Fail(LOG_PEM, "is not the key that signed the checkpoint (keys/log.vkey is)")
    if parts[LOG_PEM] != _pem(public):
        raise _Fail(LOG_PEM, "is not the canonical PEM of its key")
    if parts[LOG_VKEY] != (vkey.vkey() + "\n").encode():
        raise _Fail(LOG_VKEY, "is not one canonical vkey line")
    if pinned is not None and not any(fingerprint(k.public) == fingerprint(public) for k in pinned.notes):
        raise _Fail(LOG_PEM, f"the archive's key (fingerprint {fingerprint(public)}) is not the key you trust")
    if cp.note.to_bytes() != parts[CHECKPOINT]:
        raise _Fail(CHECKPOINT, "is not in the canonical signed-note form")
    witnesses: list[NoteVerifier] = []
    if WITNESS_VKEYS in parts:
        try:
            for line in parts[WITNESS_VKEYS].decode().splitlines():
                w = parse_vkey(line)
                witnesses.append(w if isinstance(w, CosignatureVerifier) else CosignatureVerifier(w.name, w.public))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Fail(WITNESS_VKEYS, str(exc)) from exc
    try:
        cosigs = verified_signatures(cp.note, witnesses)
    except TrailCorruption as exc:
        raise _Fail(CHECKPOINT, f"witness cosignature: {exc}") from exc
    if len({v.name for v, _ in cosigs}) != len(witnesses) or \
            (witnesses and parts[WITNESS_VKEYS] != "".join(w.vkey() + "\n" for w in witnesses).encode()):
        raise _Fail(WITNESS_VKEYS, "lists a witness whose cosignature the checkpoint does not carry, or is not "
                                   "canonical")
    # the record and its place in the tree
    record_bytes = _need(parts, RECORD_AVRO)
    leaf = recompute_hash(record_bytes)
    if leaf != record_bytes[-32:]:
        raise _Fail(RECORD_AVRO, f"the record hashes to {leaf.hex()}, it claims {record_bytes[-32:].hex()}")
    try:
        record = record_from_bytes(record_bytes)
    except TrailCorruption as exc:
        raise _Fail(RECORD_AVRO, str(exc)) from exc
    if record.chain_id != cp.chain_id:
        raise _Fail(RECORD_AVRO, f"the record is of chain {record.chain_id}, the checkpoint of {cp.chain_id}")
    try:
        inc = json.loads(_need(parts, INCLUSION))
        path = [bytes.fromhex(h) for h in inc["audit_path"]]
        if (inc["chain"], inc["seq"], inc["tree_size"], inc["leaf_hash"]) != \
                (record.chain_id, record.seq, cp.size, leaf.hex()):
            raise ValueError("its chain, seq, tree size or leaf differ from the record and checkpoint")
    except (ValueError, KeyError, TypeError) as exc:
        raise _Fail(INCLUSION, str(exc)) from exc
    if root_from_inclusion(record.seq, cp.size, leaf, path) != cp.root:
        raise _Fail(INCLUSION, "the audit path does not lead from the record to the checkpoint's root")
    if parts[INCLUSION] != _inclusion_json(record, cp.size, path):
        raise _Fail(INCLUSION, "is not in its canonical form")
    if _need(parts, RECORD_JSON) != record_facts(record).encode():
        raise _Fail(RECORD_JSON, "differs from the facts the record holds")
    # the pack the decision names
    pack_name = None
    packs = [n for n in parts if n.startswith("pack/")]
    if record.decision is not None:
        pack_name = f"{record.decision.pack_id}.yaml"
        if packs != [f"pack/{pack_name}"]:
            raise _Fail(f"pack/{pack_name}", "missing from the archive" if not packs else f"unexpected parts {packs}")
        try:
            got = pack_hash_of(parts[f"pack/{pack_name}"])
        except PolicyError as exc:
            raise _Fail(f"pack/{pack_name}", f"not a readable pack ({exc})") from exc
        if got != record.decision.pack_hash:
            raise _Fail(f"pack/{pack_name}", f"content hash {got}, the record names {record.decision.pack_hash}")
    elif packs:
        raise _Fail(packs[0], "a rejection record names no pack")
    cosigners = [(s.name, cosignature_time(s)) for _, s in cosigs]
    if _need(parts, SUMMARY).decode("utf-8", "replace") != render_summary(record, cp, public, cosigners, pack_name):
        raise _Fail(SUMMARY, "differs from what the verified parts say")
    # the manifest: exactly these parts, with these hashes, about this record
    listed = manifest["parts"]
    actual = {n: hashlib.sha256(d).hexdigest() for n, d in parts.items() if n != MANIFEST}
    if set(listed) != set(actual):
        raise _Fail(MANIFEST, f"lists {sorted(set(listed) ^ set(actual))} differently from the archive")
    for name, digest in actual.items():
        if listed[name] != digest:  # every part but a pack's comments is checked above: the manifest changed
            raise _Fail(MANIFEST, f"the SHA-256 it lists for {name} is not that part's (that entry was changed"
                                  + (", or the pack's comments or layout" if name.startswith("pack/") else "") + ")")
    if (manifest.get("chain"), manifest.get("seq"), manifest.get("event_id"), manifest.get("log_key_fingerprint")) != \
            (record.chain_id, record.seq, record.event_id, fingerprint(public)):
        raise _Fail(MANIFEST, "its chain, seq, event id or key fingerprint differ from the record and key")
    try:
        datetime.fromisoformat(manifest["created_at"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _Fail(MANIFEST, "created_at is not a time") from exc
    if pack_archive(parts) != data:
        raise _Fail("archive", "the zip container was altered (its parts hold, its other bytes differ from the "
                               "archive this tool writes)")
    return record
