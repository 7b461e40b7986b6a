"""RFC 6962 trees: the reference vectors, every proof shape, and tampered proofs."""

from __future__ import annotations

import random

import pytest

from service.chain.errors import ProofError
from service.chain.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency reference leaves and roots (RFC 6962 test vectors, as
# published with transparency-dev/merkle), used as data only.
HEX_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]
HEX_LEAVES.append("606162636465666768696a6b6c6d6e6f")
LEAVES = [bytes.fromhex(h) for h in HEX_LEAVES]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.fixture
def reference() -> MerkleTree:
    return MerkleTree(leaf_hash(leaf) for leaf in LEAVES)


def test_roots_match_the_rfc6962_reference(reference: MerkleTree) -> None:
    assert reference.root(0) == EMPTY_ROOT
    for size, root in enumerate(ROOTS, start=1):
        assert reference.root(size).hex() == root
        assert Frontier.of(reference.leaf(i) for i in range(size)).root().hex() == root


def test_proofs_match_the_reference(reference: MerkleTree) -> None:
    assert [p.hex()[:8] for p in reference.inclusion_proof(5, 8)] == [
        "bc1a0643",
        "ca854ea1",
        "d37ee418",
    ]
    assert [p.hex()[:8] for p in reference.consistency_proof(2, 8)] == ["5f083f0a", "6b47aaf2"]
    assert [p.hex()[:8] for p in reference.consistency_proof(6, 8)] == [
        "0ebc5d34",
        "ca854ea1",
        "d37ee418",
    ]


def test_every_inclusion_and_consistency_proof_of_small_trees_verifies() -> None:
    leaves = [leaf_hash(n.to_bytes(2, "big")) for n in range(70)]
    tree = MerkleTree(leaves)
    for size in range(1, 71):
        root = tree.root(size)
        for index in range(size):
            verify_inclusion(index, size, leaves[index], tree.inclusion_proof(index, size), root)
        for old in range(size + 1):
            proof = tree.consistency_proof(old, size)
            verify_consistency(old, size, tree.root(old), root, proof)


def test_frontier_round_trips_and_extends_like_the_tree() -> None:
    frontier = Frontier()
    tree = MerkleTree()
    for n in range(40):
        leaf = leaf_hash(bytes([n]))
        frontier, _ = Frontier.from_text(frontier.append(leaf).to_text()), tree.append(leaf)
        assert frontier.root() == tree.root()


def test_a_flipped_proof_byte_fails() -> None:
    rng = random.Random(1)
    leaves = [leaf_hash(bytes([n])) for n in range(100)]
    tree = MerkleTree(leaves)
    for _ in range(200):
        size = rng.randint(2, 100)
        index, old = rng.randrange(size), rng.randint(1, size - 1)
        proof = tree.inclusion_proof(index, size)
        bad = [bytearray(p) for p in proof]
        bad[rng.randrange(len(bad))][rng.randrange(32)] ^= 1 << rng.randrange(8)
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaves[index], [bytes(b) for b in bad], tree.root(size))
        proof = tree.consistency_proof(old, size)
        bad = [bytearray(p) for p in proof]
        bad[rng.randrange(len(bad))][rng.randrange(32)] ^= 1 << rng.randrange(8)
        with pytest.raises(ProofError):
            verify_consistency(old, size, tree.root(old), tree.root(size), [bytes(b) for b in bad])


def test_wrong_index_size_or_leaf_fails() -> None:
    leaves = [leaf_hash(bytes([n])) for n in range(9)]
    tree = MerkleTree(leaves)
    proof = tree.inclusion_proof(3, 9)
    for index, size, leaf in ((4, 9, leaves[3]), (3, 8, leaves[3]), (3, 9, leaves[4])):
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaf, proof, tree.root(9))
    with pytest.raises(ProofError, match="went back"):
        verify_consistency(5, 4, tree.root(5), tree.root(4), [])
    with pytest.raises(ProofError, match="forked"):
        verify_consistency(4, 4, tree.root(4), tree.root(5), [])
