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
