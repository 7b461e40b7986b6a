"""Errors raised by the provenance ledger.

Every error carries a message a user can act on: what is wrong and how to fix it.
"""

from __future__ import annotations

from service.chain.errors import ChainVerificationError


class LedgerError(Exception):
    """Base error for the provenance ledger."""


class NotRegisteredError(LedgerError):
    """An event names a model digest that has no register record."""


class DuplicateRegistrationError(LedgerError):
    """A model digest is registered a second time."""


class RevokedError(LedgerError):
    """An event other than reading targets a revoked model."""


class SeparationOfDutiesError(LedgerError):
    """A model is approved by the key or identity that registered (trained) it."""


class AnchorError(LedgerError):
    """An audit checkpoint anchor goes backwards or forks from an earlier anchor."""


class RecordSchemaError(LedgerError):
    """A record, payload or evaluation does not have the documented shape."""


class MetricsError(LedgerError):
    """A metrics JSON file is missing, unreadable or malformed."""


class ArtifactReadError(LedgerError):
    """A model artifact cannot be read for hashing."""


class BackendError(LedgerError):
    """The storage backend cannot be opened, read or written."""


class LedgerNotFoundError(BackendError):
    """No ledger exists at the given location."""


class LedgerExistsError(BackendError):
    """``init`` was asked to create a ledger where a non-empty one already exists."""


class SeedError(LedgerError):
    """A pod's ledger cannot be seeded from the approved export (named, with the fix)."""


class LedgerIntegrityError(LedgerError, ChainVerificationError):
    """Stored or exported records fail verification; names the first bad record.

    It is both a :class:`LedgerError` (so the CLI handles it like any ledger error) and a
    :class:`~service.chain.errors.ChainVerificationError` with ``position`` and ``reason``.
    """

    def __init__(self, position: str, reason: str) -> None:
        ChainVerificationError.__init__(self, position, reason)
