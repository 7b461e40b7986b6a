"""Ledger URLs: which store a URL names, and how to show it without its password."""

from __future__ import annotations

import re
from pathlib import Path

from service.ledger.errors import BackendError

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
