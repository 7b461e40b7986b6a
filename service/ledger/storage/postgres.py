"""PostgreSQL storage: the shared ledger for several replicas (psycopg 3).

Appends run in one transaction that first takes a transaction-scoped advisory lock
(``pg_advisory_xact_lock``), then reads the head, inserts the next row and commits; the
lock is released at commit, so appends from any number of processes or hosts form one
linear chain. ``seq`` is also the primary key: a fork could never be stored. A checkpoint
built by an append is inserted in the same transaction (table ``ztml_ledger_checkpoints``).

A writer that made the ledger's last append skips the read: it builds the next row from
what it knows and one statement takes the lock and inserts the row only if the ledger is
still as the writer left it (:mod:`service.ledger.storage.known`), so a lone writer
appends in one round trip, as many as a plain INSERT.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

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
from service.ledger.storage.known import (
    Known,
    KnownView,
    checkpoint_digest,
    row_digest,
    subject_digest,
)
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
CHECKPOINTS = f"{TABLE}_checkpoints"
CHECKPOINT_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS} ("
    " size BIGINT PRIMARY KEY,"
    " note TEXT NOT NULL,"
    " frontier TEXT NOT NULL)"
)
_COLUMNS = "seq, type, subject, record"
_SELECT = f"SELECT {_COLUMNS} FROM {TABLE}"  # noqa: S608
_CP_SELECT = f"SELECT size, note, frontier FROM {CHECKPOINTS}"  # noqa: S608
_APPEND_READS = append_reads_query(table=TABLE, checkpoints=CHECKPOINTS, placeholder="%s")
_INSERT_ROW = f"INSERT INTO {TABLE} (seq, type, subject, record) VALUES (%s, %s, %s, %s)"  # noqa: S608
_INSERT_CHECKPOINT = f"INSERT INTO {CHECKPOINTS} (size, note, frontier) VALUES (%s, %s, %s)"  # noqa: S608


def _guarded_insert(*, subject_rows: bool, checkpoint: bool) -> str:
    """The one statement of an append built from what the writer knows.

    It inserts the row only if the append lock is free now (never waiting for it, so no
    lock is held while waiting: no deadlock with a writer that holds it and waits for a
    table lock) and the stored head, newest checkpoint and subject rows hash as the
    writer knows them (:mod:`service.ledger.storage.known`); a subject known to have no
    rows is checked by a probe of its index. It returns one row when it inserted.
    """
    subject_guard = (
        "(SELECT sha256(convert_to(string_agg(seq || ' ' || record, E'\\n' ORDER BY seq), "  # noqa: S608
        f"'UTF8')) FROM {TABLE} WHERE subject = %(subject)s) = %(subject_digest)s"
        if subject_rows
        else f"NOT EXISTS (SELECT FROM {TABLE} WHERE subject = %(subject)s)"
    )
    insert = (
        f"WITH lock AS (SELECT pg_try_advisory_xact_lock({LOCK_KEY}) AS held), "  # noqa: S608
        f"r AS (INSERT INTO {TABLE} (seq, type, subject, record) "
        "SELECT %(seq)s, %(type)s, %(subject)s, %(record)s FROM lock WHERE held "
        "AND (SELECT sha256(convert_to(seq || ' ' || record, 'UTF8')) "
        f"FROM {TABLE} ORDER BY seq DESC LIMIT 1) = %(head_digest)s "
        "AND (SELECT sha256(convert_to(size || ' ' || frontier || ' ' || note, 'UTF8')) "
        f"FROM {CHECKPOINTS} ORDER BY size DESC LIMIT 1) IS NOT DISTINCT FROM "
        f"%(checkpoint_digest)s AND {subject_guard} RETURNING seq) "
    )
    if not checkpoint:
        return f"{insert}SELECT seq FROM r"  # noqa: S608
    return (
        f"{insert}INSERT INTO {CHECKPOINTS} (size, note, frontier) "  # noqa: S608
        "SELECT %(size)s, %(note)s, %(frontier)s FROM r RETURNING size"
    )


_GUARDED_INSERTS = {
    (rows, checkpoint): _guarded_insert(subject_rows=rows, checkpoint=checkpoint)
    for rows in (False, True)
    for checkpoint in (False, True)
}


def _checkpoint(values: Any) -> CheckpointRow:
    size, note, frontier = values
    return CheckpointRow(size=int(size), note=str(note), frontier=str(frontier))


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

    def row(self, seq: int) -> Row | None:
        found = self._cur.execute(f"{_SELECT} WHERE seq = %s", (seq,)).fetchone()
        return None if found is None else _row(found)

    def rows_between(self, start: int, end: int) -> list[Row]:
        self._cur.execute(f"{_SELECT} WHERE seq >= %s AND seq < %s ORDER BY seq", (start, end))
        return [_row(values) for values in self._cur.fetchall()]

    def latest_checkpoint(self) -> CheckpointRow | None:
        found = self._cur.execute(f"{_CP_SELECT} ORDER BY size DESC LIMIT 1").fetchone()
        return None if found is None else _checkpoint(found)


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
                    for statement in (*SCHEMA, CHECKPOINT_SCHEMA):
                        self._conn.execute(statement)
            else:
                found = self._conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
                if found is None or found[0] is None:
                    raise LedgerNotFoundError(
                        f"No ledger table {TABLE} in {self._display}. Create it with "
                        f"`ztml ledger init --ledger {self._display}`."
                    )
            found = self._conn.execute("SELECT to_regclass(%s)", (CHECKPOINTS,)).fetchone()
            self._has_checkpoints = found is not None and found[0] is not None
            self._known: Known | None = None
            self._alone = False
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

    def append(self, build: AppendBuilder, *, subject: str | None = None) -> Row:
        """Lock (advisory xact lock), build the next row from the head, insert, commit.

        When this writer's last append was the ledger's last one (seen under the lock),
        the row is built from what it knows and stored by one guarded statement in one
        round trip (:mod:`service.ledger.storage.known`). Otherwise, or when the guard
        finds the ledger changed, five round trips: begin, lock, the reads (head, newest
        checkpoint and ``subject``'s rows in one statement), the inserts, commit.
        """
        known = self._known if self._alone and self._has_checkpoints else None
        if known is not None:
            stored = self._append_known(build, subject, known)
            if stored is not None:
                return stored
        return self._append_locked(build, subject)

    def _append_known(self, build: AppendBuilder, subject: str | None, known: Known) -> Row | None:
        """Build from ``known`` and store it if the ledger is still as known; else None.

        The statement inserts only while it holds the append lock, so no locked append
        is between its read and its insert. Should another append have been committed
        after the statement's snapshot, the row's ``seq`` is taken and the insert fails:
        no fork can be stored either way.
        """
        self._alone = False
        try:
            row, checkpoint = build(KnownView(known, subject))
        except Exception:
            return None
        if row.subject != subject or subject is None:
            return None
        rows = known.subjects.get(subject, [])
        params: dict[str, Any] = {
            "seq": row.seq,
            "type": row.type,
            "subject": subject,
            "record": row.record,
            "head_digest": row_digest(known.head),
            "checkpoint_digest": checkpoint_digest(known.latest),
        }
        if rows:
            params["subject_digest"] = subject_digest(rows)
        if checkpoint is not None:
            params.update(size=checkpoint.size, note=checkpoint.note, frontier=checkpoint.frontier)
        query = _GUARDED_INSERTS[bool(rows), checkpoint is not None]
        try:
            cur = self._conn.execute(query, params)
        except psycopg.errors.UniqueViolation:
            return None
        except psycopg.Error as err:
            raise self._fail("append to", err) from None
        if cur.rowcount != 1:
            return None
        known.stored(row, checkpoint, rows)
        self._alone = True
        return row

    def _append_locked(self, build: AppendBuilder, subject: str | None) -> Row:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                if not self._has_checkpoints:
                    cur.execute(CHECKPOINT_SCHEMA)  # a ledger of an earlier version
                tagged = cur.execute(_APPEND_READS, (subject,)).fetchall()
                view = ReadAhead(
                    _View(cur), subject, tagged, to_row=_row, to_checkpoint=_checkpoint
                )
                row, checkpoint = build(view)
                values = (row.seq, row.type, row.subject, row.record)
                if checkpoint is None:
                    cur.execute(_INSERT_ROW, values)
                else:
                    cur.execute(
                        f"WITH r AS ({_INSERT_ROW}) {_INSERT_CHECKPOINT}",
                        (*values, checkpoint.size, checkpoint.note, checkpoint.frontier),
                    )
        except psycopg.Error as err:
            raise self._fail("append to", err) from None
        self._has_checkpoints = True
        last = self._known
        self._alone = last is not None and view.head() == last.head
        known = last if self._alone and last is not None else None
        if known is None:
            known = self._known = Known(head=row, latest=view.latest_checkpoint())
        read = (
            view.subject_rows(subject) if subject is not None and row.subject == subject else None
        )
        known.stored(row, checkpoint, read)
        return row

    def latest_checkpoint(self) -> CheckpointRow | None:
        """The stored checkpoint of the largest tree size."""
        if not self._has_checkpoints:
            return None
        try:
            with self._conn.cursor() as cur:
                return _View(cur).latest_checkpoint()
        except psycopg.Error as err:
            raise self._fail("read", err) from None

    def checkpoints(self) -> list[CheckpointRow]:
        """Every stored checkpoint, by tree size."""
        if not self._has_checkpoints:
            return []
        try:
            found = self._conn.execute(f"{_CP_SELECT} ORDER BY size").fetchall()
        except psycopg.Error as err:
            raise self._fail("read", err) from None
        return [_checkpoint(values) for values in found]

    def put_checkpoint(self, checkpoint: CheckpointRow) -> None:
        """Store a checkpoint, replacing the one of the same size."""
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                cur.execute(CHECKPOINT_SCHEMA)
                cur.execute(
                    f"INSERT INTO {CHECKPOINTS} (size, note, frontier) "  # noqa: S608
                    "VALUES (%s, %s, %s) ON CONFLICT (size) DO UPDATE SET "
                    "note = excluded.note, frontier = excluded.frontier",
                    (checkpoint.size, checkpoint.note, checkpoint.frontier),
                )
        except psycopg.Error as err:
            raise self._fail("write to", err) from None
        self._has_checkpoints = True
        self._alone = False  # the newest checkpoint may have changed

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
