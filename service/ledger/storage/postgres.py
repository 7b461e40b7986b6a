"""PostgreSQL storage: the shared ledger for several replicas (psycopg 3).

Appends run in one transaction that first takes a transaction-scoped advisory lock
(``pg_advisory_xact_lock``), then reads the head, inserts the next row and commits; the
lock is released at commit, so appends from any number of processes or hosts form one
linear chain. ``seq`` is also the primary key: a fork could never be stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from service.ledger.errors import BackendError, LedgerNotFoundError
from service.ledger.storage.base import PAGE_SIZE, AppendBuilder, Row, paged_rows
from service.ledger.storage.url import redact_url

TABLE = "ztml_ledger"
# A fixed advisory-lock key for ledger appends ("ztml" + "lgr" in ASCII).
LOCK_KEY = 0x7A746D6C_6C6772
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " seq BIGINT PRIMARY KEY,"
    " type TEXT NOT NULL,"
    " subject TEXT,"
    " record TEXT NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_subject ON {TABLE} (subject)",
)
_COLUMNS = "seq, type, subject, record"
_SELECT = f"SELECT {_COLUMNS} FROM {TABLE}"  # noqa: S608


def _row(values: Any) -> Row:
    seq, rtype, subject, record = values
    return Row(seq=int(seq), type=str(rtype), subject=subject, record=str(record))


class _View:
    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def head(self) -> Row | None:
        found = self._cur.execute(f"{_SELECT} ORDER BY seq DESC LIMIT 1").fetchone()
        return None if found is None else _row(found)

    def subject_rows(self, subject: str) -> list[Row]:
        self._cur.execute(f"{_SELECT} WHERE subject = %s ORDER BY seq", (subject,))
        return [_row(values) for values in self._cur.fetchall()]


class PostgresBackend:
    """A ledger in a PostgreSQL table (``ztml_ledger``).

    Args:
        url: ``postgresql://user[:password]@host:port/database``.
        create: create the table when missing.

    Raises:
        LedgerNotFoundError: ``create`` is false and the table does not exist.
        BackendError: the server cannot be reached or refuses the connection.
    """

    def __init__(self, url: str, *, create: bool) -> None:
        self._display = redact_url(url)
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
            if create:
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                    for statement in SCHEMA:
                        self._conn.execute(statement)
            else:
                found = self._conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
                if found is None or found[0] is None:
                    raise LedgerNotFoundError(
                        f"No ledger table {TABLE} in {self._display}. Create it with "
                        f"`ztml ledger init --ledger {self._display}`."
                    )
        except psycopg.Error as err:
            raise BackendError(
                f"Cannot open ledger {self._display}: {str(err).strip()}. Check that the "
                "server is running and the URL (user, host, port, database) is right."
            ) from None

    @property
    def display_url(self) -> str:
        """The URL without its password."""
        return self._display

    def _fail(self, action: str, err: Exception) -> BackendError:
        return BackendError(f"Cannot {action} ledger {self._display}: {str(err).strip()}.")

    def count(self) -> int:
        """The number of stored rows."""
        try:
            found = self._conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()  # noqa: S608
        except psycopg.Error as err:
            raise self._fail("read", err) from None
        return 0 if found is None else int(found[0])

    def head(self) -> Row | None:
        """The row with the highest ``seq``."""
        try:
            with self._conn.cursor() as cur:
                return _View(cur).head()
        except psycopg.Error as err:
            raise self._fail("read", err) from None

    def append(self, build: AppendBuilder) -> Row:
        """Lock (advisory xact lock), build the next row from the head, insert, commit."""
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                row = build(_View(cur))
                cur.execute(
                    f"INSERT INTO {TABLE} (seq, type, subject, record) "  # noqa: S608
                    "VALUES (%s, %s, %s, %s)",
                    (row.seq, row.type, row.subject, row.record),
                )
        except psycopg.Error as err:
            raise self._fail("append to", err) from None
        return row

    def rows(self, *, start: int = 0, page_size: int = PAGE_SIZE) -> Iterator[Row]:
        """Rows from ``start`` on, in ``seq`` order, one page per query."""

        def fetch(after: int) -> list[Any]:
            try:
                return self._conn.execute(
                    f"{_SELECT} WHERE seq > %s ORDER BY seq LIMIT %s", (after, page_size)
                ).fetchall()
            except psycopg.Error as err:
                raise self._fail("read", err) from None

        return paged_rows(fetch, _row, start=start, page_size=page_size)

    def subject_rows(self, subject: str) -> list[Row]:
        """All rows indexed under ``subject``."""
        try:
            with self._conn.cursor() as cur:
                return _View(cur).subject_rows(subject)
        except psycopg.Error as err:
            raise self._fail("read", err) from None

    def rows_with_prefix(self, prefix: str) -> list[Row]:
        """Register rows whose subject starts with ``prefix``."""
        try:
            found = self._conn.execute(
                f"{_SELECT} WHERE type = 'register' AND left(subject, %s) = %s ORDER BY seq",
                (len(prefix), prefix),
            ).fetchall()
        except psycopg.Error as err:
            raise self._fail("read", err) from None
        return [_row(values) for values in found]

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
