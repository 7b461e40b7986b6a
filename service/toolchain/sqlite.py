"""Open the SQLite databases ztml shares between processes (WAL, waiting on locks).

The ledger, the monitors' state and the review queue are SQLite files that several
processes (the service's workers, the CLI) open at once. Each connection is opened the
same way: write-ahead logging so readers never block the writer, a busy timeout so a
process waits for the write lock instead of failing, autocommit mode (callers run their
own ``BEGIN IMMEDIATE`` transactions) and usable from any thread under the caller's lock.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Literal


def create_private(path: Path) -> bool:
    """Create an empty database file readable by its owner only, unless it exists.

    Records are private: SQLite gives the -wal and -shm files the database file's mode.
    Root (the CLI, a root ``ztml up``) creating a file in a state directory that was
    handed to the service account gives the file to that account, so the servers can
    still write it (SQLite does the same for the -wal and -shm files).

    Returns:
        Whether the file was created.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    if os.geteuid() == 0:
        parent = path.parent.stat()
        os.chown(path, parent.st_uid, parent.st_gid)
    return True


def connect_shared(
    path: Path, *, busy_timeout_ms: int, synchronous: Literal["NORMAL", "FULL"]
) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with a busy timeout, in autocommit mode.

    Args:
        path: The database file (created with mode 0600 if missing).
        busy_timeout_ms: How long to wait for another process's lock, in milliseconds.
        synchronous: ``FULL`` makes every commit durable on power loss; ``NORMAL`` in WAL
            mode may lose the last commits on power loss but never corrupts the file.

    Returns:
        The open connection (``isolation_level=None``, ``check_same_thread=False``).

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database.
    """
    create_private(Path(path))
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except sqlite3.Error:
        conn.close()
        raise
    return conn
