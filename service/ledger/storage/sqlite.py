"""SQLite storage: the embedded default ledger (one file, WAL, synchronous=FULL).

Appends run inside ``BEGIN IMMEDIATE``, which takes the database's write lock before the
head is read, so appends from several processes are serialized into one linear chain.
A killed appender leaves either its whole record or nothing (SQLite transactions); a
checkpoint built by an append is inserted in the same transaction.

A connection that made the last append and sees, under the lock, that no other connection
has committed since (``PRAGMA data_version``) builds the next row from what it knows
instead of reading the head and the newest checkpoint again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.ledger.errors import BackendError, LedgerNotFoundError
from service.ledger.storage.base import (
    PAGE_SIZE,
    AppendBuilder,
    CheckpointRow,
    ReadAhead,
    Row,
    append_reads_query,
    paged_rows,
)
from service.ledger.storage.known import Known, KnownView
from service.toolchain.sqlite import connect_shared

BUSY_TIMEOUT_S = 60.0

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ledger ("
    " seq INTEGER PRIMARY KEY,"
    " type TEXT NOT NULL,"
    " subject TEXT,"
    " record TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ledger_subject ON ledger (subject)",
)
CHECKPOINT_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ledger_checkpoints ("
    " size INTEGER PRIMARY KEY,"
    " note TEXT NOT NULL,"
    " frontier TEXT NOT NULL)"
)
_COLUMNS = "seq, type, subject, record"
_CP_SELECT = "SELECT size, note, frontier FROM ledger_checkpoints"
_APPEND_READS = append_reads_query(
    table="ledger", checkpoints="ledger_checkpoints", placeholder="?"
)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _checkpoint(values: Any) -> CheckpointRow:
    size, note, frontier = values
    return CheckpointRow(size=int(size), note=_text(note), frontier=_text(frontier))


def _row(values: Any) -> Row:
    seq, rtype, subject, record = values
    text: str | bytes = record
    if isinstance(record, bytes):
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError:
            text = record
    return Row(
        seq=int(seq),
        type=rtype.decode("utf-8", "replace") if isinstance(rtype, bytes) else str(rtype),
        subject=(subject.decode("utf-8", "replace") if isinstance(subject, bytes) else subject),
        record=text,
    )


class _View:
    def __init__(self, conn: sqlite3.Connection, *, checkpoints: bool = True) -> None:
        self._conn = conn
        self._checkpoints = checkpoints

    def head(self) -> Row | None:
        found = self._conn.execute(
            f"SELECT {_COLUMNS} FROM ledger ORDER BY seq DESC LIMIT 1"  # noqa: S608
        ).fetchone()
        return None if found is None else _row(found)

    def subject_rows(self, subject: str) -> list[Row]:
        cursor = self._conn.execute(
            f"SELECT {_COLUMNS} FROM ledger WHERE subject = ? ORDER BY seq",  # noqa: S608
            (subject,),
        )
        return [_row(values) for values in cursor]

    def row(self, seq: int) -> Row | None:
        found = self._conn.execute(
            f"SELECT {_COLUMNS} FROM ledger WHERE seq = ?",  # noqa: S608
            (seq,),
        ).fetchone()
        return None if found is None else _row(found)

    def rows_between(self, start: int, end: int) -> list[Row]:
        cursor = self._conn.execute(
            f"SELECT {_COLUMNS} FROM ledger WHERE seq >= ? AND seq < ? ORDER BY seq",  # noqa: S608
            (start, end),
        )
        return [_row(values) for values in cursor]

    def latest_checkpoint(self) -> CheckpointRow | None:
        if not self._checkpoints:
            return None
        found = self._conn.execute(f"{_CP_SELECT} ORDER BY size DESC LIMIT 1").fetchone()
        return None if found is None else _checkpoint(found)


class SqliteBackend:
    """A ledger in one SQLite file.

    Args:
        path: the database file.
        create: create the file and table when missing.

    Raises:
        LedgerNotFoundError: ``create`` is false and there is no ledger at ``path``.
        BackendError: the file is not a SQLite database or cannot be opened.
    """

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise LedgerNotFoundError(
                f"No ledger at {self.path}. Create it with `ztml ledger init` "
                "(or pass --ledger URL)."
            )
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect_shared(
                self.path, busy_timeout_ms=int(BUSY_TIMEOUT_S * 1000), synchronous="FULL"
            )
            self._conn.text_factory = bytes
            if create:
                self._conn.execute("BEGIN IMMEDIATE")
                for statement in (*SCHEMA, CHECKPOINT_SCHEMA):
                    self._conn.execute(statement)
                self._conn.execute("COMMIT")
            elif not self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger'"
            ).fetchone():
                raise LedgerNotFoundError(
                    f"{self.path} is a SQLite database without a ledger table. Create a "
                    "ledger with `ztml ledger init --ledger NEW_PATH`."
                )
            self._has_checkpoints = self._checkpoint_table()
        except sqlite3.Error as err:
            raise BackendError(f"Cannot open ledger {self.path}: {err}.") from None
        # The ledger as this connection's last append left it, and the data_version
        # under which it did (None: read it again).
        self._known: Known | None = None
        self._version: int | None = None

    def _checkpoint_table(self) -> bool:
        return bool(
            self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_checkpoints'"
            ).fetchone()
        )

    @property
    def display_url(self) -> str:
        """The ledger file path."""
        return str(self.path)

    def count(self) -> int:
        """The number of stored rows."""
        try:
            return int(self._conn.execute("SELECT count(*) FROM ledger").fetchone()[0])
        except sqlite3.Error as err:
            raise BackendError(f"Cannot read ledger {self.path}: {err}.") from None

    def head(self) -> Row | None:
        """The row with the highest ``seq``."""
        try:
            return _View(self._conn).head()
        except sqlite3.Error as err:
            raise BackendError(f"Cannot read ledger {self.path}: {err}.") from None

    def append(self, build: AppendBuilder, *, subject: str | None = None) -> Row:
        """Lock (BEGIN IMMEDIATE), build the next row from the head, insert, commit.

        The head, the newest checkpoint and ``subject``'s rows are read by one statement,
        unless ``PRAGMA data_version`` shows that no other connection committed since
        this one's last append: then the ledger is as that append left it, and the row
        is built from what this writer knows (:mod:`service.ledger.storage.known`),
        reading only a subject it does not know.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not self._has_checkpoints:
                    conn.execute(CHECKPOINT_SCHEMA)  # a ledger of an earlier version
                    self._has_checkpoints = True
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                view = _View(conn)
                known = self._known if version == self._version else None
                if known is None:
                    tagged = conn.execute(_APPEND_READS, (subject,)).fetchall()
                    read = ReadAhead(view, subject, tagged, to_row=_row, to_checkpoint=_checkpoint)
                    head = read.head()
                    if head is not None:
                        known = Known(head=head, latest=read.latest_checkpoint())
                    before = None if subject is None else read.subject_rows(subject)
                    row, checkpoint = build(read)
                else:
                    before = None if subject is None else known.subjects.get(subject)
                    if subject is not None and before is None:
                        before = view.subject_rows(subject)
                        known.subjects[subject] = before
                    row, checkpoint = build(KnownView(known, subject, reads=view))
                conn.execute(
                    "INSERT INTO ledger (seq, type, subject, record) VALUES (?, ?, ?, ?)",
                    (row.seq, row.type, row.subject, row.record),
                )
                if checkpoint is not None:
                    conn.execute(
                        "INSERT INTO ledger_checkpoints (size, note, frontier) VALUES (?, ?, ?)",
                        (checkpoint.size, checkpoint.note, checkpoint.frontier),
                    )
                conn.execute("COMMIT")
            except BaseException:
                self._known = None
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._has_checkpoints = self._checkpoint_table()
                raise
        except sqlite3.Error as err:
            raise BackendError(f"Cannot append to ledger {self.path}: {err}.") from None
        if known is None:
            known = Known(head=row, latest=checkpoint)
        known.stored(row, checkpoint, before if row.subject == subject else None)
        self._known, self._version = known, version
        return row

    def latest_checkpoint(self) -> CheckpointRow | None:
        """The stored checkpoint of the largest tree size."""
        try:
            return _View(self._conn, checkpoints=self._has_checkpoints).latest_checkpoint()
        except sqlite3.Error as err:
            raise BackendError(f"Cannot read ledger {self.path}: {err}.") from None

    def checkpoints(self) -> list[CheckpointRow]:
        """Every stored checkpoint, by tree size."""
        if not self._has_checkpoints:
            return []
        try:
            return [
                _checkpoint(values) for values in self._conn.execute(f"{_CP_SELECT} ORDER BY size")
            ]
        except sqlite3.Error as err:
            raise BackendError(f"Cannot read ledger {self.path}: {err}.") from None

    def put_checkpoint(self, checkpoint: CheckpointRow) -> None:
        """Store a checkpoint, replacing the one of the same size."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(CHECKPOINT_SCHEMA)
                conn.execute(
                    "INSERT INTO ledger_checkpoints (size, note, frontier) VALUES (?, ?, ?) "
                    "ON CONFLICT (size) DO UPDATE SET note = excluded.note, "
                    "frontier = excluded.frontier",
                    (checkpoint.size, checkpoint.note, checkpoint.frontier),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._known = None  # the newest checkpoint may have changed
        except sqlite3.Error as err:
            raise BackendError(f"Cannot write to ledger {self.path}: {err}.") from None
        self._has_checkpoints = True

    def rows(self, *, start: int = 0, page_size: int = PAGE_SIZE) -> Iterator[Row]:
        """Rows from ``start`` on, in ``seq`` order, one page per query."""

        def fetch(after: int) -> list[Any]:
            try:
                return self._conn.execute(
                    f"SELECT {_COLUMNS} FROM ledger WHERE seq > ? "  # noqa: S608
                    "ORDER BY seq LIMIT ?",
                    (after, page_size),
                ).fetchall()
            except sqlite3.Error as err:
                raise BackendError(f"Cannot read ledger {self.path}: {err}.") from None

        return paged_rows(fetch, _row, start=start, page_size=page_size)

    def subject_rows(self, subject: str) -> list[Row]:
        """All rows indexed under ``subject``."""
        try:
            return _View(self._conn).subject_rows(subject)
        except sqlite3.Error as err:
            raise BackendError(f"Cannot read ledger {self.path}: {err}.") from None

    def rows_with_prefix(self, prefix: str) -> list[Row]:
        """Register rows whose subject starts with ``prefix``."""
        try:
            cursor = self._conn.execute(
                f"SELECT {_COLUMNS} FROM ledger WHERE type = 'register' "  # noqa: S608
                "AND substr(subject, 1, ?) = ? ORDER BY seq",
                (len(prefix), prefix),
            )
            return [_row(values) for values in cursor]
        except sqlite3.Error as err:
            raise BackendError(f"Cannot read ledger {self.path}: {err}.") from None

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
