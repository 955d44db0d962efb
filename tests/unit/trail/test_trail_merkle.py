"""The Merkle code against the published RFC 6962 vectors (transparency-dev/merkle testonly,
Certificate Transparency), not only against itself."""

from __future__ import annotations

import hashlib

import pytest

from auditor.trail.merkle import (
    EMPTY_ROOT,
    MerkleRange,
    PathBuilder,
    RangeNodes,
    consistency_proof,
    inclusion_path,
    leaf_hash,
    list_nodes,
    root_from_inclusion,
    root_from_range,
    root_of,
    verify_consistency,
    verify_inclusion,
)

LEAF_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
H = bytes.fromhex
# (0-based leaf index, tree size, audit path) from transparency-dev/merkle proof/verify_test.go
INCLUSION = [
    (0, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (5, 8, [H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 3, [H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
]
# compact ranges (subtree roots) for sizes 0..8, from testonly/constants.go CompactTrees()
NODE = {(0, 0): "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        (0, 2): "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        (0, 4): "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        (0, 6): "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        (1, 0): "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        (1, 2): "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        (2, 0): "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        (3, 0): "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"}
COMPACT = [[], [(0, 0)], [(1, 0)], [(1, 0), (0, 2)], [(2, 0)], [(2, 0), (0, 4)], [(2, 0), (1, 2)],
           [(2, 0), (1, 2), (0, 6)], [(3, 0)]]
LEAVES = [leaf_hash(x) for x in LEAF_INPUTS]


def test_empty_root_is_sha256_of_nothing():
    assert EMPTY_ROOT == ROOTS[0] == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("size", range(9))
def test_reference_root_matches_rfc6962_vectors(size):
    assert root_of(LEAVES[:size]) == ROOTS[size]


def test_incremental_range_matches_rfc6962_roots_and_compact_trees():
    rng = MerkleRange()
    assert rng.root() == ROOTS[0]
    for size in range(1, 9):
        rng.append(LEAVES[size - 1])
        assert rng.size == size
        assert rng.root() == ROOTS[size]
        assert list(rng.subtree_roots) == [H(NODE[k]) for k in COMPACT[size]]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_audit_paths_match_published_vectors(index, size, path):
    assert inclusion_path(LEAVES[:size], index) == path
    assert verify_inclusion(index, size, LEAVES[index], path, ROOTS[size])
    builder = PathBuilder(index, size)
    for leaf in LEAVES[:size]:
        builder.add(leaf)
    assert builder.path() == path and builder.leaf == LEAVES[index]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_corrupted_proofs_are_rejected(index, size, path):
    root, leaf = ROOTS[size], LEAVES[index]
    assert not verify_inclusion(index + 1, size, leaf, path, root)
    assert not verify_inclusion(index, size * 2, leaf, path, root)
    assert not verify_inclusion(index, size, leaf_hash(b"wrong"), path, root)
    assert not verify_inclusion(index, size, leaf, path + [root], root)
    assert not verify_inclusion(index, size, leaf, path[:-1], root)
    for i in range(len(path)):
        bad = list(path)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        assert not verify_inclusion(index, size, leaf, bad, root)


def test_every_leaf_of_every_size_up_to_40_proves_and_matches_reference():
    leaves = [leaf_hash(bytes([i, i * 7 % 256])) for i in range(40)]
    rng = MerkleRange()
    for n in range(1, 41):
        rng.append(leaves[n - 1])
        assert rng.root() == root_of(leaves[:n])
        for i in range(n):
            path = inclusion_path(leaves[:n], i)
            assert root_from_inclusion(i, n, leaves[i], path) == rng.root()


# ---------------------------------------------------------------- consistency proofs

# (size1, size2, proof) from transparency-dev/merkle proof/verify_test.go (consistencyProofs)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (6, 8, [H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 5, [H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (6, 7, [H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
]
SOME_HASH = H("abacaba000000000000000000000000000000000000000000060061e00123456")


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_consistency_proofs_match_published_vectors(size1, size2, proof):
    assert consistency_proof(size1, size2, list_nodes(LEAVES[:size2])) == proof
    assert verify_consistency(size1, size2, ROOTS[size1], ROOTS[size2], proof)


def corrupt_consistency(size1, size2, root1, root2, proof):
    """The probes of transparency-dev's corruptConsistencyProof: every one must fail."""
    probes = [(size1 - 1, size2, root1, root2, proof), (size1 + 1, size2, root1, root2, proof),
              (size1 ^ 2, size2, root1, root2, proof), (size1, size2 * 2, root1, root2, proof),
              (size1, size2 // 2, root1, root2, proof), (size1, size2, b"WrongRoot", root2, proof),
              (size1, size2, root1, b"WrongRoot", proof), (size1, size2, root2, root1, proof),
              (size1, size2, root1, root2, []), (size1, size2, root1, root2, [*proof, b""]),
              (size1, size2, root1, root2, [*proof, root1]), (size1, size2, root1, root2, [*proof, root2]),
              (size1, size2, root1, root2, [b"", *proof]), (size1, size2, root1, root2, [root1, *proof]),
              (size1, size2, root1, root2, [root2, *proof]), (size1, size2, root1, root2, [proof[0], *proof]),
              (size1, size2, root1, root2, proof[:-1])]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((size1, size2, root1, root2, flipped))
    return probes


@pytest.mark.parametrize(("size1", "size2", "proof"), [c for c in CONSISTENCY if c[2]])
def test_corrupted_consistency_proofs_are_rejected(size1, size2, proof):
    for probe in corrupt_consistency(size1, size2, ROOTS[size1], ROOTS[size2], proof):
        assert not verify_consistency(*probe), probe


@pytest.mark.parametrize(("size1", "size2", "root1", "root2", "proof", "ok"), [
    (0, 0, b"r1", b"r2", [], False), (1, 1, b"r1", b"r2", [], False),
    (0, 0, b"r1", b"r1", [], True), (0, 1, b"r1", b"r2", [], True), (1, 1, b"r2", b"r2", [], True),
    (1, 0, b"r1", b"r2", [], False), (2, 1, b"r1", b"r2", [], False), (1, 2, b"r1", b"r2", [], False),
    (0, 0, EMPTY_ROOT, b"r2", [], False), (1, 1, EMPTY_ROOT, b"r2", [], False),
    (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False), (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
    (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
])
def test_consistency_edge_cases_of_the_reference_tests(size1, size2, root1, root2, proof, ok):
    assert verify_consistency(size1, size2, root1, root2, proof) is ok


def test_every_consistency_proof_up_to_size_40_verifies_and_needs_only_a_compact_range():
    leaves = [leaf_hash(b"leaf %d" % i) for i in range(40)]
    for n in range(41):
        for m in range(n + 1):
            proof = consistency_proof(m, n, list_nodes(leaves[:n]))
            assert verify_consistency(m, n, root_of(leaves[:m]), root_of(leaves[:n]), proof), (m, n)
            old = MerkleRange()
            old.extend(leaves[:m])
            assert consistency_proof(m, n, RangeNodes(m, old.subtree_roots, leaves[m:n])) == proof, (m, n)
            if 0 < m < n:
                assert not verify_consistency(m, n, root_of(leaves[:m]), SOME_HASH, proof)


def test_a_compact_range_restores_only_when_it_leads_to_the_signed_root():
    leaves = [leaf_hash(b"%d" % i) for i in range(13)]
    rng = MerkleRange()
    rng.extend(leaves)
    again = MerkleRange.restore(13, rng.subtree_roots, root_of(leaves))
    again.append(leaf_hash(b"13"))
    rng.append(leaf_hash(b"13"))
    assert again.root() == rng.root()
    assert root_from_range(13, rng.subtree_roots[:-1]) is None
    with pytest.raises(ValueError, match="does not lead"):
        MerkleRange.restore(13, (SOME_HASH,) + rng.subtree_roots[1:], root_of(leaves))
