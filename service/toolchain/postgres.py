"""Locate PostgreSQL server binaries (Debian installs them under /usr/lib/postgresql)."""

from __future__ import annotations

import shutil
from pathlib import Path


def find_postgres_bin() -> Path | None:
    """Return the directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.insert(0, Path(initdb).resolve().parent)
    for directory in candidates:
        if all((directory / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None
