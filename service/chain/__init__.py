"""The hash-chain core shared by the provenance ledger and the audit log."""

from service.chain.core import GENESIS_HASH, Checkpoint, link_hash
from service.chain.errors import ChainError, ChainVerificationError

__all__ = ["GENESIS_HASH", "ChainError", "ChainVerificationError", "Checkpoint", "link_hash"]
