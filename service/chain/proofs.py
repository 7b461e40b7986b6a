"""Inclusion and consistency proofs as documents an independent verifier checks.

A proof is a JSON object, the form ``scripts/tlog-verify`` reads::

    {"format": "ztml-tlog-proof/v1", "kind": "inclusion", "checkpoint": "<signed note>",
     "index": N, "leaf": "<base64 leaf bytes>", "proof": ["<base64 hash>", ...]}
    {"format": "ztml-tlog-proof/v1", "kind": "consistency",
     "old_checkpoint": "<signed note>" | "old": {"size": M, "root": "<base64>"},
     "checkpoint": "<signed note>", "proof": ["<base64 hash>", ...]}

The ledger (records as canonical JSON) and each audit chain (record lines) make them
with :class:`TreeProver` over their leaves.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from service.chain.errors import ProofError
from service.chain.merkle import MerkleTree, leaf_hash
from service.chain.tlog import TreeCheckpoint

PROOF_FORMAT = "ztml-tlog-proof/v1"


def _b64(values: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


class TreeProver:
    """Makes proofs over a log's leaves (the tree is built once).

    Args:
        leaves: the leaf bytes, in order.
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self.tree = MerkleTree(leaf_hash(leaf) for leaf in self.leaves)

    def check(self, checkpoint: TreeCheckpoint) -> None:
        """Require ``checkpoint`` to sign the root of the first ``size`` leaves.

        Raises:
            ProofError: it does not.
        """
        if checkpoint.size > self.tree.size or self.tree.root(checkpoint.size) != checkpoint.root:
            raise ProofError(
                f"the checkpoint of size {checkpoint.size} does not match the log's records"
            )

    def inclusion(self, checkpoint: TreeCheckpoint, index: int) -> dict[str, Any]:
        """The proof that leaf ``index`` is in the tree ``checkpoint`` signs.

        Raises:
            ProofError: ``index`` is not covered, or the leaves do not match.
        """
        self.check(checkpoint)
        if not 0 <= index < checkpoint.size:
            raise ProofError(
                f"seq {index} is not covered by the checkpoint of size {checkpoint.size} "
                f"(seq 0..{checkpoint.size - 1}); pick a later checkpoint with --size."
            )
        return {
            "format": PROOF_FORMAT,
            "kind": "inclusion",
            "checkpoint": checkpoint.text,
            "index": index,
            "leaf": base64.b64encode(self.leaves[index]).decode(),
            "proof": _b64(self.tree.inclusion_proof(index, checkpoint.size)),
        }

    def consistency(self, old: TreeCheckpoint | int, new: TreeCheckpoint) -> dict[str, Any]:
        """The proof that the tree of ``old`` (a checkpoint or a size) is a prefix of ``new``.

        Raises:
            ProofError: the sizes are out of order, or the leaves do not match.
        """
        self.check(new)
        old_size = old if isinstance(old, int) else old.size
        if not 0 <= old_size <= new.size:
            raise ProofError(f"cannot prove size {old_size} consistent with size {new.size}.")
        proof: dict[str, Any] = {"format": PROOF_FORMAT, "kind": "consistency"}
        if isinstance(old, int):
            root = base64.b64encode(self.tree.root(old_size)).decode()
            proof["old"] = {"size": old_size, "root": root}
        else:
            self.check(old)
            proof["old_checkpoint"] = old.text
        proof["checkpoint"] = new.text
        proof["proof"] = _b64(self.tree.consistency_proof(old_size, new.size))
        return proof
