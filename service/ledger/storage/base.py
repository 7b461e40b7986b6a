"""The small interface every ledger storage backend implements.

A backend stores rows ``(seq, type, subject, record)`` in one table with ``seq`` as
primary key; ``record`` is the record's canonical JSON text, ``subject`` its model digest
(or ``anchor:<log>``) so the rules can look up a model's history. Appends are serialized
by the backend: inside one transaction it locks, reads the head, lets the ledger build
the next record and inserts it, so concurrent writers always produce one linear chain.

A second table holds the ledger's signed checkpoints, one row per tree size: the signed
note and the tree's frontier at that size (so the next append extends the Merkle root in
O(log n) without reading every record). The append that builds a checkpoint inserts it
in the same transaction as its record. Ledgers written before checkpoints existed have no
such table; it is created by the first append or by ``ztml ledger upgrade``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

PAGE_SIZE = 1000


@dataclass(frozen=True)
class Row:
    """One stored row; ``record`` is the raw stored text (bytes if not valid UTF-8)."""

    seq: int
    type: str
    subject: str | None
    record: str | bytes


def paged_rows(
    fetch_page: Callable[[int], Sequence[Any]],
    to_row: Callable[[Any], Row],
    *,
    start: int,
    page_size: int,
) -> Iterator[Row]:
    """Yield rows from ``start`` on in ``seq`` order, one query per page (keyset paging).

    Args:
        fetch_page: Returns up to ``page_size`` raw rows with ``seq`` greater than its
            argument, in ``seq`` order (and raises the backend's error on failure).
        to_row: Turns one raw row into a :class:`Row`.
        start: The first ``seq`` to yield.
        page_size: The page size ``fetch_page`` uses; a shorter page is the last.
    """
    after = start - 1
    while True:
        page = fetch_page(after)
        for values in page:
            row = to_row(values)
            after = row.seq
            yield row
        if len(page) < page_size:
            return


@dataclass(frozen=True)
class CheckpointRow:
    """One stored checkpoint: the tree size, the signed note and the tree's frontier."""

    size: int
    note: str
    frontier: str


class AppendView(Protocol):
    """What the ledger may read while it holds the append lock."""

    def head(self) -> Row | None:
        """The row with the highest ``seq``, or None for an empty ledger."""
        ...

    def subject_rows(self, subject: str) -> list[Row]:
        """All rows indexed under ``subject``, in ``seq`` order."""
        ...

    def row(self, seq: int) -> Row | None:
        """The row at ``seq``, or None."""
        ...

    def rows_between(self, start: int, end: int) -> list[Row]:
        """The rows with ``start <= seq < end``, in ``seq`` order."""
        ...

    def latest_checkpoint(self) -> CheckpointRow | None:
        """The stored checkpoint of the largest tree size, or None."""
        ...


AppendBuilder = Callable[[AppendView], tuple[Row, CheckpointRow | None]]


def append_reads_query(*, table: str, checkpoints: str, placeholder: str) -> str:
    """One statement for the reads of an append: head, newest checkpoint, subject's rows.

    Each result row is tagged by its first column: 0 the head, 1 the newest checkpoint
    (size, note, frontier, NULL), 2 a row of the subject bound to ``placeholder``, in
    ``seq`` order. Run under the append lock, it saves the round trips (or statements)
    of reading them one by one.
    """
    columns = "seq, type, subject, record"
    return (
        f"SELECT 0, {columns} FROM (SELECT {columns} FROM {table} "  # noqa: S608
        "ORDER BY seq DESC LIMIT 1) h "
        "UNION ALL SELECT 1, size, note, frontier, NULL FROM (SELECT size, note, frontier "
        f"FROM {checkpoints} ORDER BY size DESC LIMIT 1) c "
        f"UNION ALL SELECT 2, {columns} FROM {table} WHERE subject = {placeholder} "
        "ORDER BY 1, 2"
    )


class ReadAhead:
    """An :class:`AppendView` whose usual reads came from :func:`append_reads_query`.

    Args:
        view: the backend's view, for any other read.
        subject: the subject whose rows were read.
        tagged: the query's result rows.
        to_row: turns ``(seq, type, subject, record)`` values into a :class:`Row`.
        to_checkpoint: turns ``(size, note, frontier)`` values into a checkpoint row.
    """

    def __init__(
        self,
        view: AppendView,
        subject: str | None,
        tagged: Sequence[Sequence[Any]],
        *,
        to_row: Callable[[Sequence[Any]], Row],
        to_checkpoint: Callable[[Sequence[Any]], CheckpointRow],
    ) -> None:
        self._view = view
        self._subject = subject
        self._head: Row | None = None
        self._latest: CheckpointRow | None = None
        self._subject_rows: list[Row] = []
        for tag, *values in tagged:
            if tag == 0:
                self._head = to_row(values)
            elif tag == 1:
                self._latest = to_checkpoint(values[:3])
            else:
                self._subject_rows.append(to_row(values))

    def head(self) -> Row | None:
        """The row with the highest ``seq``, or None for an empty ledger."""
        return self._head

    def subject_rows(self, subject: str) -> list[Row]:
        """All rows indexed under ``subject``, in ``seq`` order."""
        if subject != self._subject:
            return self._view.subject_rows(subject)
        return list(self._subject_rows)

    def row(self, seq: int) -> Row | None:
        """The row at ``seq``, or None."""
        return self._view.row(seq)

    def rows_between(self, start: int, end: int) -> list[Row]:
        """The rows with ``start <= seq < end``, in ``seq`` order."""
        return self._view.rows_between(start, end)

    def latest_checkpoint(self) -> CheckpointRow | None:
        """The stored checkpoint of the largest tree size, or None."""
        return self._latest


class Backend(Protocol):
    """A ledger storage backend."""

    @property
    def display_url(self) -> str:
        """Where the ledger is, safe to print (no password)."""
        ...

    def count(self) -> int:
        """The number of stored rows."""
        ...

    def head(self) -> Row | None:
        """The row with the highest ``seq``, or None for an empty ledger."""
        ...

    def append(self, build: AppendBuilder, *, subject: str | None = None) -> Row:
        """Atomically: lock, call ``build`` with a view, insert its row (and checkpoint).

        ``subject`` names the subject whose rows ``build`` reads; the backend reads them
        with the head and the newest checkpoint (:func:`append_reads_query`).
        """
        ...

    def latest_checkpoint(self) -> CheckpointRow | None:
        """The stored checkpoint of the largest tree size, or None."""
        ...

    def checkpoints(self) -> list[CheckpointRow]:
        """Every stored checkpoint, by tree size."""
        ...

    def put_checkpoint(self, checkpoint: CheckpointRow) -> None:
        """Store a checkpoint, replacing the one of the same size (to add a cosignature)."""
        ...

    def rows(self, *, start: int = 0, page_size: int = PAGE_SIZE) -> Iterator[Row]:
        """Rows with ``seq >= start`` in ``seq`` order, read page by page."""
        ...

    def subject_rows(self, subject: str) -> list[Row]:
        """All rows indexed under ``subject``, in ``seq`` order."""
        ...

    def rows_with_prefix(self, prefix: str) -> list[Row]:
        """Register rows whose subject starts with ``prefix``."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...
