"""The daemon's checkpoints, without Kafka: one signed checkpoint per chain per transaction that
covers exactly the sealed records, rolled back on abort; restore decisions; witness proofs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from streamkit import compliant, messages, processor, wire

from auditor.errors import TrailCorruption
from auditor.exitcodes import exit_code
from auditor.stream.checkpointing import Checkpointer, LastRecord, UnsignedChains, judge
from auditor.stream.witnessing import _Chain
from auditor.trail.chainlog import ChainLog, stored_from_message
from auditor.trail.keys import KeyRing
from auditor.trail.merkle import root_of, verify_consistency

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys", "example.com/auditor")


def batch(p, n: int, partition: int, first: int = 0):
    return p.process(messages([wire(compliant("ipasar", i)) for i in range(n)], partition=partition,
                              first_offset=first))


def opened(out, keys):
    return [stored_from_message(o.value, list(o.headers))[1].open(keys.verifier) for o in out]


def test_one_checkpoint_per_chain_covering_exactly_the_sealed_records(keys):
    p = processor()
    cp = Checkpointer(keys.signer, keys.verifier, "audit.checkpoints", audit_partitions=3, partitions=3,
                      clock=lambda: NOW)
    r1, r2 = batch(p, 5, partition=1), batch(p, 3, partition=2)
    out = cp.seal(r1)
    p.commit_heads()
    cp.commit()
    out += cp.seal(r2)
    assert [(o.topic, o.partition) for o in out] == [("audit.checkpoints", 1), ("audit.checkpoints", 2)]
    signed = opened(out, keys)
    assert [(s.chain_id, s.size) for s in signed] == [("events/1", 5), ("events/2", 3)]
    hashes = [d for _, _, _, d in r1.sealed]
    assert signed[0].root == root_of(hashes) and signed[0].head.head_hash == hashes[-1]


def test_the_next_checkpoint_proves_it_extends_the_last(keys):
    p = processor()
    cp = Checkpointer(keys.signer, keys.verifier, "c", clock=lambda: NOW)
    first = cp.seal(batch(p, 4, 0))
    p.commit_heads()
    cp.commit()
    second = cp.seal(batch(p, 7, 0, first=4))
    (a,), (b,) = opened(first, keys), opened(second, keys)
    _, stored = stored_from_message(second[0].value, list(second[0].headers))
    assert b.size == 11 and stored.prev_size == 4
    assert verify_consistency(4, 11, a.root, b.root, stored.proof)


def test_an_aborted_transaction_rolls_the_chain_back(keys):
    p = processor()
    cp = Checkpointer(keys.signer, keys.verifier, "c", clock=lambda: NOW)
    cp.seal(batch(p, 4, 0))
    p.commit_heads()
    cp.commit()
    cp.seal(batch(p, 6, 0, first=4))
    p.discard_heads()
    cp.discard()
    assert cp.logs["events/0"].head.size == 4
    (again,) = opened(cp.seal(batch(p, 6, 0, first=4)), keys)
    assert again.size == 10


def test_a_record_that_does_not_link_to_the_signed_head_is_refused(keys):
    p = processor()
    cp = Checkpointer(keys.signer, keys.verifier, "c", clock=lambda: NOW)
    cp.adopt(ChainLog.genesis("events/0"))
    p.set_head("events/0", None)
    result = batch(p, 2, 0)
    record, seq, prev, digest = result.sealed[0]
    result.sealed[0] = (record, seq, b"\x00" * 32, digest)
    with pytest.raises(TrailCorruption, match="signed head"):
        cp.seal(result)


def _signed_log(keys, n: int):
    p = processor()
    cp = Checkpointer(keys.signer, keys.verifier, "c", clock=lambda: NOW)
    out = cp.seal(batch(p, n, 0))
    (signed,) = opened(out, keys)
    _, stored = stored_from_message(out[0].value, list(out[0].headers))
    return signed, stored


def test_restore_adopts_a_head_only_when_the_signed_checkpoint_covers_it(keys):
    signed, stored = _signed_log(keys, 6)
    restore = lambda s: ChainLog.restore(s, keys.verifier)  # noqa: E731
    ok = judge("events/0", (signed, stored), LastRecord(5, signed.head.head_hash, "a/0@9"), restore)
    assert ok.problem is None and ok.log.head == signed.head
    forged = judge("events/0", (signed, stored), LastRecord(6, b"\x01" * 32, "a/0@10"), restore)
    assert forged.forged and forged.log.head == signed.head and "seq 6 at a/0@10" in (forged.problem or "")
    replaced = judge("events/0", (signed, stored), LastRecord(5, b"\x01" * 32, "a/0@10"), restore)
    assert replaced.forged and replaced.log.head == signed.head
    gone = judge("events/0", (signed, stored), None, restore)
    assert not gone.forged and gone.log.head.size == 6 and "size 6" in (gone.problem or "")
    unsigned = judge("events/0", None, LastRecord(3, b"\x01" * 32, "a/0@3"), restore)
    assert unsigned.unsigned and not unsigned.forged and unsigned.log.head.size == 0
    assert "seq 3 (last at a/0@3) are covered by no signed checkpoint" in (unsigned.problem or "")
    assert judge("events/0", None, None, restore).problem is None


def test_witness_proofs_from_any_size_the_thread_still_knows(keys):
    leaves = [bytes([i]) * 32 for i in range(40)]
    chain = _Chain(0, ())
    chain.leaves = list(leaves)
    for old in (0, 1, 7, 16, 33, 40):
        assert verify_consistency(old, 40, root_of(leaves[:old]), root_of(leaves), chain.proof_from(old, 40)) \
            or old == 0
    chain.rebase(16)
    assert chain.base == 16 and len(chain.leaves) == 24
    assert verify_consistency(20, 40, root_of(leaves[:20]), root_of(leaves), chain.proof_from(20, 40))
    with pytest.raises(Exception, match="older than the 16"):
        chain.proof_from(7, 40)


def test_an_unsigned_chain_is_refused_with_the_upgrade_path():
    err = UnsignedChains("events/0", "chain events/0: records up to seq 3 (last at a/0@3) are covered by no signed "
                                     "checkpoint")
    assert exit_code(err) == 2 and err.chain == "events/0"
    text = str(err)
    assert "seq 3" in text and "trail.adopt_unsigned_chains: true" in text
    assert "AUDITOR_TRAIL_ADOPT_UNSIGNED_CHAINS=true" in text and "auditor verify kafka://" in text


def test_an_adopted_chain_is_signed_in_the_next_transaction_even_if_it_carries_none_of_its_records(keys):
    legacy = processor()
    old = batch(legacy, 7, 1)  # records an auditor before signed checkpoints wrote: no checkpoint
    log = ChainLog.genesis("events/1")
    for _, seq, _, digest in old.sealed:
        log.extend(digest, seq)
    cp = Checkpointer(keys.signer, keys.verifier, "c", audit_partitions=2, partitions=2, clock=lambda: NOW)
    cp.adopt(log)
    cp.unsigned.add("events/1")
    p = processor()
    cp.seal(batch(p, 2, 0))
    p.discard_heads()
    cp.discard()  # an aborted transaction signs nothing: still due
    assert cp.unsigned == {"events/1"} and cp.logs["events/1"].head.size == 7
    out = cp.seal(batch(p, 2, 0))
    p.commit_heads()
    cp.commit()
    signed = {s.chain_id: s for s in opened(out, keys)}
    assert signed["events/1"].size == 7
    assert signed["events/1"].root == root_of([d for _, _, _, d in old.sealed])
    assert cp.unsigned == set()
    assert [s.chain_id for s in opened(cp.seal(batch(p, 1, 0, first=2)), keys)] == ["events/0"]
