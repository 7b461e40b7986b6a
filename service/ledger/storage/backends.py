"""Open the storage backend a ledger URL names."""

from __future__ import annotations

from service.ledger.errors import BackendError
from service.ledger.storage.base import Backend
from service.ledger.storage.sqlite import SqliteBackend
from service.ledger.storage.url import redact_url, sqlite_path


def open_backend(url: str, *, create: bool) -> Backend:
    """Open the backend a URL names: ``postgresql://...``, ``sqlite:///path`` or a path.

    Args:
        url: the ledger URL.
        create: create the database/schema when missing (else raise LedgerNotFoundError).

    Raises:
        BackendError: the URL is not understood or the store cannot be opened.
    """
    if url.startswith(("postgresql://", "postgres://")):
        # psycopg takes a quarter of a second to import: load it only for PostgreSQL URLs.
        from service.ledger.storage.postgres import PostgresBackend

        return PostgresBackend(url, create=create)
    if "://" in url and not url.startswith("sqlite:"):
        raise BackendError(
            f"Ledger URL scheme of {redact_url(url)!r} is not supported; use a file path, "
            "sqlite:///absolute/path or postgresql://user@host:port/db."
        )
    return SqliteBackend(sqlite_path(url), create=create)
