"""What a writer knows of the ledger after its own append, so the next can skip the read.

An append reads the head, the newest checkpoint and its subject's rows under the append
lock before it can build the next record; on a server that read costs round trips. A
writer whose last append was the last one already knows what that read returns: its own
record is the head, its own checkpoint the newest, and it read or wrote the rows of the
subjects it appended to. :class:`Known` keeps that, and :class:`KnownView` serves it to
the ledger's builder (a subject the writer has not seen is taken to have no rows).

The backend then stores the built row with a statement that inserts it only if the
stored head, newest checkpoint and subject rows are still exactly the known ones, compared
by the SHA-256 of their text (:func:`row_digest`, :func:`checkpoint_digest`,
:func:`subject_digest`, computed alike by the server). Anything else the builder asks for
raises :class:`NotKnownError`, and the backend appends the usual way.

A backend that can tell, under its append lock, that nobody else wrote since its last
append (SQLite's ``PRAGMA data_version``) knows the ledger exactly; it serves the reads
it does not know from the database (:class:`KnownView`'s ``reads``) and needs no guard.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

from service.ledger.storage.base import AppendView, CheckpointRow, Row

MAX_SUBJECTS = 64


class NotKnownError(Exception):
    """The builder needs a read this writer cannot answer from what it knows."""


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _row_text(row: Row) -> str:
    record = row.record if isinstance(row.record, str) else row.record.decode("utf-8", "replace")
    return f"{row.seq} {record}"


def row_digest(row: Row) -> bytes:
    """SHA-256 of ``"<seq> <record>"``: the head as the guard compares it."""
    return _digest(_row_text(row))


def checkpoint_digest(checkpoint: CheckpointRow | None) -> bytes | None:
    """SHA-256 of ``"<size> <frontier> <note>"`` (None: no checkpoint)."""
    if checkpoint is None:
        return None
    return _digest(f"{checkpoint.size} {checkpoint.frontier} {checkpoint.note}")


def subject_digest(rows: list[Row]) -> bytes | None:
    """SHA-256 of the rows' ``"<seq> <record>"`` joined by newlines (None: no rows)."""
    if not rows:
        return None
    return _digest("\n".join(_row_text(row) for row in rows))


@dataclass
class Known:
    """The ledger as this writer left it: head, newest checkpoint, some subjects' rows.

    Attributes:
        head: the last row (this writer's).
        latest: the newest checkpoint.
        subjects: rows of the subjects this writer read or wrote, the most recent last.
    """

    head: Row
    latest: CheckpointRow | None
    subjects: OrderedDict[str, list[Row]] = field(default_factory=OrderedDict)

    def stored(
        self, row: Row, checkpoint: CheckpointRow | None, subject_rows: list[Row] | None
    ) -> None:
        """Take in that ``row`` (and ``checkpoint``) was stored after this state.

        Args:
            row: the stored row.
            checkpoint: the checkpoint stored with it, if any.
            subject_rows: the rows of ``row``'s subject before it, when they were read.
        """
        subjects = self.subjects
        if row.subject is not None:
            subjects.pop(row.subject, None)
            if subject_rows is not None:
                subjects[row.subject] = [*subject_rows, row]
            while len(subjects) > MAX_SUBJECTS:
                subjects.popitem(last=False)
        self.head = row
        if checkpoint is not None:
            self.latest = checkpoint


class KnownView:
    """An :class:`~service.ledger.storage.base.AppendView` that answers from :class:`Known`.

    Args:
        known: what the writer knows.
        subject: the subject of the row being built; its rows are the known ones, or
            none when the writer has not seen it (the backend's guard checks either).
        reads: where to read what is not known, when the backend holds the append lock
            and knows nobody else wrote; without it such reads raise
            :class:`NotKnownError`.
    """

    def __init__(
        self, known: Known, subject: str | None, *, reads: AppendView | None = None
    ) -> None:
        self._known = known
        self._subject = subject
        self._reads = reads

    def head(self) -> Row | None:
        """The known head."""
        return self._known.head

    def subject_rows(self, subject: str) -> list[Row]:
        """The known rows of the append's subject.

        Raises:
            NotKnownError: another subject is asked for (and there is nowhere to read).
        """
        known = self._known.subjects.get(subject) if subject == self._subject else None
        if known is not None:
            return list(known)
        if self._reads is not None:
            return self._reads.subject_rows(subject)
        if subject != self._subject:
            raise NotKnownError(subject)
        return []

    def row(self, seq: int) -> Row | None:
        """Read from ``reads``.

        Raises:
            NotKnownError: there is nowhere to read.
        """
        if self._reads is None:
            raise NotKnownError(seq)
        return self._reads.row(seq)

    def rows_between(self, start: int, end: int) -> list[Row]:
        """Read from ``reads``.

        Raises:
            NotKnownError: there is nowhere to read.
        """
        if self._reads is None:
            raise NotKnownError(start, end)
        return self._reads.rows_between(start, end)

    def latest_checkpoint(self) -> CheckpointRow | None:
        """The known newest checkpoint."""
        return self._known.latest
