"""Storage backends of the ledger: SQLite (embedded default) and PostgreSQL (shared)."""

from service.ledger.storage.backends import open_backend
from service.ledger.storage.base import AppendView, Backend, CheckpointRow, Row
from service.ledger.storage.url import redact_url

__all__ = ["AppendView", "Backend", "CheckpointRow", "Row", "open_backend", "redact_url"]
