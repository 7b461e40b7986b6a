"""Errors of the hash-chain core."""

from __future__ import annotations


class ChainError(Exception):
    """Base error for hash-chained logs."""


class ChainVerificationError(ChainError):
    """A chain failed verification; names the first bad record and what is wrong.

    Attributes:
        position: where the bad record is (e.g. ``seq 41`` or ``segment-3.jsonl line 12``).
        reason: what is wrong with it.
    """

    def __init__(self, position: str, reason: str) -> None:
        super().__init__(f"{position}: {reason}")
        self.position = position
        self.reason = reason


class ProofError(ChainError):
    """A Merkle inclusion or consistency proof does not verify, or cannot be made."""


class NoteError(ChainError):
    """A signed note or checkpoint is malformed, or no trusted signature on it verifies."""


class CheckpointMismatchError(ChainVerificationError):
    """A log does not hold the tree of a checkpoint it should: cut off, rolled back or rewritten.

    Attributes:
        seq: the record it concerns: the first one missing, or the last one of a tree
            whose root differs.
    """

    def __init__(self, position: str, reason: str, *, seq: int) -> None:
        super().__init__(position, reason)
        self.seq = seq
