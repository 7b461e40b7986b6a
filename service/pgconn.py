"""One PostgreSQL connection per process, for the stores the replicas share.

The monitors' store and the review queue each keep one connection per process: opened on
first use (creating their schema under an advisory lock, so replicas starting together
do not race), reopened after the server dropped it, and never shared across ``fork``
(BentoML forks its workers; a child opens its own). A failed operation raises the
store's own error, with the URL's password redacted, so the service answers 503 and the
next call connects again: the store recovers without a restart once the database is back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from service.ledger.storage.url import redact_url

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
CONNECT_TIMEOUT_SECONDS = 3


class ProcessConnection:
    """This process's connection to one database, for one store.

    Args:
        url: ``postgresql://user@host:port/db`` or a libpq service
            (``postgresql://?service=NAME`` with ``PGSERVICEFILE``).
        application_name: Shown in ``pg_stat_activity``.
        options: Session settings (``-c name=value ...``).
        schema: Statements run once per connection, in one transaction.
        schema_lock_key: The advisory lock those statements run under.
        failure: Makes the store's error from a message (which names the redacted URL).
    """

    def __init__(
        self,
        url: str,
        *,
        application_name: str,
        options: str,
        schema: Sequence[str],
        schema_lock_key: int,
        failure: Callable[[str], Exception],
    ) -> None:
        self.url = url
        self.display_url = redact_url(url)
        self._application_name = application_name
        self._options = options
        self._schema = tuple(schema)
        self._schema_lock_key = schema_lock_key
        self._failure = failure
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = -1
        self._inherited: psycopg.Connection[Any] | None = None

    def _open(self) -> psycopg.Connection[Any]:
        import psycopg  # a quarter of a second to import: only for a PostgreSQL store

        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=self._application_name,
            options=self._options,
        )
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._schema_lock_key,))
                for statement in self._schema:
                    conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``operation`` on this process's connection (opened or reopened as needed).

        A connection the server closed while it was idle is replaced once before the
        operation fails.

        Raises:
            Exception: the store's error (``failure``): the database cannot be reached or
                the operation failed.
        """
        import psycopg

        with self._lock:
            for attempt in range(2):
                if self._pid != os.getpid():  # forked: never share the parent's connection
                    # Keep the parent's connection object alive and unused: closing or
                    # collecting it here would end the parent's session on their socket.
                    self._inherited, self._conn, self._pid = self._conn, None, os.getpid()
                reused = self._conn is not None and not self._conn.closed
                try:
                    if not reused:
                        self._drop()
                        self._conn = self._open()
                    assert self._conn is not None
                    return operation(self._conn)
                except psycopg.Error as err:
                    broken = self._conn is None or self._conn.broken or self._conn.closed
                    if broken:
                        self._drop()
                    if broken and reused and attempt == 0:
                        continue  # the server closed it since its last use: once more
                    raise self._failure(str(err).strip() or type(err).__name__) from None
            raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close this process's connection (a forked child leaves its parent's alone)."""
        with self._lock:
            if self._pid == os.getpid():
                self._drop()
            self._conn = None
