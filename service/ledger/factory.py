"""Open or create a ledger by URL: a path, ``sqlite:///abs/path`` or ``postgresql://...``."""

from __future__ import annotations

import os
from pathlib import Path

from service.ledger.errors import LedgerExistsError
from service.ledger.ledger import Clock, Ledger
from service.ledger.storage import open_backend
from service.toolchain.paths import ztml_home


def default_ledger_url() -> str:
    """``$ZTML_LEDGER_URL`` if set, else ``$ZTML_HOME/ledger.db``."""
    return os.environ.get("ZTML_LEDGER_URL") or str(ztml_home() / "ledger.db")


def open_ledger(
    url: str | Path | None = None, *, create: bool = True, clock: Clock | None = None
) -> Ledger:
    """Open the ledger at ``url``: a path, ``sqlite:///abs/path`` or ``postgresql://...``.

    Args:
        url: the ledger; default ``$ZTML_LEDGER_URL`` or ``$ZTML_HOME/ledger.db``.
        create: create the database and schema when missing.
        clock: the time source for new records.

    Raises:
        BackendError: the URL is not understood or the store cannot be opened.
        LedgerNotFoundError: ``create`` is false and there is no ledger.
    """
    return Ledger(open_backend(str(url or default_ledger_url()), create=create), clock=clock)


def init_ledger(url: str | Path | None = None) -> Ledger:
    """Create a ledger (database and schema); refuse one that already holds records.

    Raises:
        LedgerExistsError: a non-empty ledger is already there (it is left untouched).
    """
    ledger = open_ledger(url, create=True)
    count = ledger.count()
    if count:
        ledger.close()
        raise LedgerExistsError(
            f"A ledger with {count} records already exists at {ledger.url}; it is left "
            "untouched. Use another --ledger location to start a new one."
        )
    return ledger
