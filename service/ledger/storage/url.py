"""Pick a storage backend from a ledger URL."""

from __future__ import annotations

import re
from pathlib import Path

from service.ledger.errors import BackendError
from service.ledger.storage.base import Backend

_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@]*:)[^@]*@")


def redact_url(url: str) -> str:
    """Hide the password in a database URL."""
    return _PASSWORD.sub(r"\1***@", url)


def sqlite_path(url: str) -> Path:
    """The file path of a ``sqlite:///abs/path`` URL or a plain path.

    Raises:
        BackendError: a ``sqlite://`` URL without an absolute path.
    """
    if url.startswith("sqlite:"):
        rest = url.removeprefix("sqlite:")
        if not rest.startswith("///"):
            raise BackendError(
                f"Ledger URL {url!r} is not understood; use sqlite:///absolute/path/ledger.db."
            )
        return Path("/" + rest.lstrip("/"))
    return Path(url).expanduser()


def open_backend(url: str, *, create: bool) -> Backend:
    """Open the backend a URL names: ``postgresql://...``, ``sqlite:///path`` or a path.

    Args:
        url: the ledger URL.
        create: create the database/schema when missing (else raise LedgerNotFoundError).

    Raises:
        BackendError: the URL is not understood or the store cannot be opened.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from service.ledger.storage.postgres import PostgresBackend

        return PostgresBackend(url, create=create)
    if "://" in url and not url.startswith("sqlite:"):
        raise BackendError(
            f"Ledger URL scheme of {redact_url(url)!r} is not supported; use a file path, "
            "sqlite:///absolute/path or postgresql://user@host:port/db."
        )
    from service.ledger.storage.sqlite import SqliteBackend

    return SqliteBackend(sqlite_path(url), create=create)
