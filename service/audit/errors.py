"""Errors raised while writing, reading, verifying or repairing the audit log."""

from __future__ import annotations

from pathlib import Path

from service.chain.errors import ChainVerificationError


class AuditError(Exception):
    """Base error for the audit log."""


class AuditEventError(AuditError):
    """An event does not match the audit event schema and was refused (nothing was written).

    Raised for unknown fields, fields that must never be logged (raw inputs, tokens),
    wrong types and malformed values.
    """


class AuditWriteError(AuditError):
    """The audit log cannot be created or written (permissions, disk, closed log)."""


class AuditDirError(AuditError):
    """An audit directory is missing, unreadable or not laid out as an audit directory."""


class AnchorError(AuditError):
    """The anchor store (anchors file or ledger) cannot be read or written."""


class AuditTrustError(AuditError):
    """No usable trusted key to check checkpoint signatures with."""


class AuditRecoverError(AuditError):
    """``recover`` found damage that a crash cannot cause and refuses to touch it."""


class AuditVerificationError(ChainVerificationError, AuditError):
    """The audit log failed verification; names the first bad record.

    Attributes:
        file: the segment (or anchors) file holding the bad record, if known.
        line: its 1-based line number in that file, if known.
        seq: its sequence number, if known.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: Path | None = None,
        line: int | None = None,
        seq: int | None = None,
        log: str | None = None,
    ) -> None:
        parts = []
        if file is not None:
            parts.append(str(file))
        elif log is not None:
            parts.append(f"log {log}")
        if line is not None:
            parts.append(f"line {line}")
        if seq is not None:
            parts.append(f"seq {seq}")
        super().__init__(" ".join(parts) or "audit log", reason)
        self.file = file
        self.line = line
        self.seq = seq
        self.log = log
