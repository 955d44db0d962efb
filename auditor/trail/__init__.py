"""The tamper-evident audit trail: records, hash chain, checkpoints, storage, verification.

Public API::

    keys = KeyRing.load(keys_dir)            # .pseudonymizer, .signer, .verifier
    KeyRing.generate(out_dir)
    record = build_record(event, decision, source, keys.pseudonymizer, instance_id, now)
    record = build_rejection(raw_digest(raw), reason, message, source,
                             pseudonym_key_id=..., instance_id=..., now=...)
    with TrailWriter.open(trail_dir, keys, checkpoint_every=N, checkpoint_seconds=T) as w:
        w.append(records)   # seal + buffer (chains chosen by each record's source)
        w.commit()          # one fsync: appended records are durable, due checkpoints signed
    # pure, for the Kafka audit topic:
    sealed, head = seal(ChainHead.genesis(chain_id) or ChainHead.after(last), record)
    data = record_to_bytes(sealed); record_from_bytes(data)
    MerkleRange()  # incremental RFC 6962 root; MerkleRange.restore(size, compact range, root)
    # checkpoints: C2SP signed notes (auditor.trail.checkpoint), per chain; see auditor.trail.chainlog
    report = verify_source(FileSource(dir) or KafkaSource(...), keys.verifier, trusted, Policy(...))
"""

from auditor.trail.canonical import record_from_bytes, record_to_bytes
from auditor.trail.chain import ChainHead, genesis_hash, seal, seal_bytes, seal_encoded
from auditor.trail.checkpoint import Checkpoint, SignedCheckpoint, StoredCheckpoint, make_checkpoint, open_checkpoint
from auditor.trail.keys import KeyRing, Pseudonymizer, Signer, Verifier
from auditor.trail.merkle import MerkleRange, verify_inclusion
from auditor.trail.proof import InclusionProof, make_proof, verify_proof
from auditor.trail.record import (
    AuditRecord,
    DecisionFacts,
    Facts,
    RecordType,
    Rejection,
    SourceRef,
    build_record,
    build_rejection,
    event_digest,
    raw_digest,
    record_to_event,
)
from auditor.trail.replay import ReplayFilter, iter_records
from auditor.trail.source import FileSource, TrailSource
from auditor.trail.store import TrailWriter
from auditor.trail.verify import Issue, Policy, VerifyReport, verify_source, verify_trail

__all__ = [
    "AuditRecord", "ChainHead", "Checkpoint", "DecisionFacts", "Facts", "FileSource", "InclusionProof", "Issue",
    "KeyRing", "MerkleRange", "Policy", "Pseudonymizer", "RecordType", "Rejection", "ReplayFilter",
    "SignedCheckpoint", "Signer", "SourceRef", "StoredCheckpoint", "TrailSource", "TrailWriter", "Verifier",
    "VerifyReport", "build_record", "build_rejection", "event_digest", "genesis_hash", "iter_records",
    "make_checkpoint", "make_proof", "open_checkpoint", "raw_digest", "record_from_bytes", "record_to_bytes",
    "record_to_event", "seal", "seal_bytes", "seal_encoded", "verify_inclusion", "verify_proof", "verify_source",
    "verify_trail",
]
