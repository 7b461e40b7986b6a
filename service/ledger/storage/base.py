"""The small interface every ledger storage backend implements.

A backend stores rows ``(seq, type, subject, record)`` in one table with ``seq`` as
primary key; ``record`` is the record's canonical JSON text, ``subject`` its model digest
(or ``anchor:<log>``) so the rules can look up a model's history. Appends are serialized
by the backend: inside one transaction it locks, reads the head, lets the ledger build
the next record and inserts it, so concurrent writers always produce one linear chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

PAGE_SIZE = 1000


@dataclass(frozen=True)
class Row:
    """One stored row; ``record`` is the raw stored text (bytes if not valid UTF-8)."""

    seq: int
    type: str
    subject: str | None
    record: str | bytes


class AppendView(Protocol):
    """What the ledger may read while it holds the append lock."""

    def head(self) -> Row | None:
        """The row with the highest ``seq``, or None for an empty ledger."""
        ...

    def subject_rows(self, subject: str) -> list[Row]:
        """All rows indexed under ``subject``, in ``seq`` order."""
        ...


AppendBuilder = Callable[[AppendView], Row]


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

    def append(self, build: AppendBuilder) -> Row:
        """Atomically: lock, call ``build`` with a view of the head, insert its row."""
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
