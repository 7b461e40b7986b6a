"""The store the monitors share across the service's worker processes (and replicas).

BentoML runs several worker processes, and each has its own memory, so per-subject state
(token buckets, request counts, query histories) lives in one SQLite file,
``$ZTML_HOME/run/monitor.db`` by default. The database runs in WAL mode so readers never
block the writer; every read-modify-write is one ``BEGIN IMMEDIATE`` transaction, which
takes the write lock up front, so two workers can never both read the old state and both
admit a request; ``busy_timeout`` makes a worker wait for the lock instead of failing.

Each process opens its own connection (a connection is never shared across ``fork``);
threads of one process share it under a lock.

Several replicas of the service (pods) do not share a file: with a ``postgresql://``
location (``ZTML_MONITOR_URL``) the monitors use :mod:`service.monitor.postgres` instead,
one database for every replica; :func:`open_store` picks the store a location names.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.monitor.errors import MonitorConfigError, MonitorStoreError
from service.monitor.postgres import PostgresMonitorStore, is_postgres_url
from service.toolchain.paths import ztml_home
from service.toolchain.sqlite import connect_shared

BUSY_TIMEOUT_MS = 5000


def default_db_path() -> Path:
    """Return ``$ZTML_HOME/run/monitor.db``."""
    return ztml_home() / "run" / "monitor.db"


class MonitorStore:
    """A per-process connection to the shared monitor database.

    Args:
        db_path: The database file; its directory is created ``0700`` and the file is
            made ``0600``.
        schema: ``CREATE ... IF NOT EXISTS`` statements run once on open.
    """

    def __init__(self, db_path: Path, *, schema: str) -> None:
        self.db_path = Path(db_path)
        self._schema = schema
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = connect_shared(
                self.db_path, busy_timeout_ms=BUSY_TIMEOUT_MS, synchronous="NORMAL"
            )
            conn.execute("BEGIN IMMEDIATE")
            for statement in filter(None, (s.strip() for s in self._schema.split(";"))):
                conn.execute(statement)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as err:
            raise MonitorStoreError(
                f"Cannot open the monitor database {self.db_path}: {err}. Check that "
                "$ZTML_HOME/run is writable by the service."
            ) from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def ready(self) -> None:
        """Open this process's connection (creating the schema) if not open yet.

        Raises:
            MonitorStoreError: the database cannot be opened.
        """
        with self._lock:
            self._connect()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block in one ``BEGIN IMMEDIATE`` transaction (committed unless it raises).

        Raises:
            MonitorStoreError: the database is unavailable or locked beyond the timeout.
        """
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise MonitorStoreError(f"Monitor database unavailable: {err}.") from None
            try:
                yield conn
            except sqlite3.Error as err:
                conn.execute("ROLLBACK")
                raise MonitorStoreError(f"Monitor database error: {err}.") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                conn.execute("ROLLBACK")
                raise MonitorStoreError(f"Monitor database commit failed: {err}.") from None

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def open_store(location: Path | str | None, *, schema: str) -> MonitorStore | PostgresMonitorStore:
    """Open the monitor store ``location`` names.

    Args:
        location: A SQLite file (default ``$ZTML_HOME/run/monitor.db``) or a
            ``postgresql://`` URL (the store shared by the replicas of a scaled-out
            service).
        schema: The SQLite tables of the caller (the PostgreSQL store has its own).

    Raises:
        MonitorConfigError: ``location`` is a URL of another kind.
    """
    if is_postgres_url(location):
        return PostgresMonitorStore(str(location))
    if isinstance(location, str) and "://" in location:
        scheme = location.split(":", 1)[0]
        raise MonitorConfigError(
            f"Monitor store URLs of scheme {scheme!r} are not supported; use a file path or "
            "postgresql://user@host:port/db (or postgresql://?service=NAME)."
        )
    return MonitorStore(Path(location) if location else default_db_path(), schema=schema)
