"""A writer's known state: appends that skip the read (PostgreSQL, SQLite) and when they do not."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service.keys.store import Signer, TrustStore
from service.ledger import DuplicateRegistrationError, Ledger, open_ledger
from service.ledger.storage.base import AppendBuilder, CheckpointRow, Row
from service.ledger.storage.known import MAX_SUBJECTS, Known, KnownView, NotKnownError
from service.ledger.storage.postgres import PostgresBackend
from service.ledger.storage.sqlite import SqliteBackend
from service.toolchain.postgres import fresh_database


def _row(seq: int, subject: str) -> Row:
    return Row(seq=seq, type="register", subject=subject, record=f"{{{seq}}}")


def test_known_view_answers_only_for_the_appends_subject() -> None:
    known = Known(head=_row(0, "a"), latest=CheckpointRow(1, "note", "1 00"))
    known.stored(_row(1, "b"), None, [])
    view = KnownView(known, "b")
    assert view.head() == _row(1, "b")
    assert view.subject_rows("b") == [_row(1, "b")]
    assert view.latest_checkpoint() == CheckpointRow(1, "note", "1 00")
    for read in (
        lambda: view.subject_rows("a"),
        lambda: view.row(0),
        lambda: view.rows_between(0, 1),
    ):
        with pytest.raises(NotKnownError):
            read()


def test_an_unseen_subject_is_taken_to_have_no_rows() -> None:
    view = KnownView(Known(head=_row(0, "a"), latest=None), "new")
    assert view.subject_rows("new") == []


def test_known_subjects_are_bounded_and_unread_ones_forgotten() -> None:
    known = Known(head=_row(0, "s0"), latest=None)
    for seq in range(1, MAX_SUBJECTS + 5):
        known.stored(_row(seq, f"s{seq}"), None, [])
    assert len(known.subjects) == MAX_SUBJECTS
    assert f"s{MAX_SUBJECTS + 4}" in known.subjects
    known.stored(_row(99, f"s{MAX_SUBJECTS + 4}"), None, None)
    assert f"s{MAX_SUBJECTS + 4}" not in known.subjects


Spy = list[str]


def _spy_locked(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> Spy:
    """Record each append that took the locked path (reads under the lock)."""
    backend = ledger.backend
    assert isinstance(backend, PostgresBackend)
    calls: Spy = []
    locked: Callable[[AppendBuilder, str | None], Row] = backend._append_locked

    def spy(build: AppendBuilder, subject: str | None) -> Row:
        calls.append(str(subject))
        return locked(build, subject)

    monkeypatch.setattr(backend, "_append_locked", spy)
    return calls


@pytest.mark.system
@pytest.mark.postgres
def test_lone_writer_appends_in_one_guarded_statement(
    postgres_url: str,
    trainer: Signer,
    approver: Signer,
    trust: TrustStore,
    register_model: Any,
    digest_of: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = fresh_database(postgres_url, "known_lone")
    with open_ledger(url) as ledger:
        register_model(ledger, trainer, 1)
        register_model(ledger, trainer, 2)  # under the lock: nobody appended in between
        locked = _spy_locked(ledger, monkeypatch)
        register_model(ledger, trainer, 3)
        ledger.approve(digest_of(3), signer=approver, comment="ok")
        ledger.approve(digest_of(1), signer=approver, comment="ok")
        with pytest.raises(DuplicateRegistrationError):
            register_model(ledger, trainer, 2)
        assert locked == [digest_of(2)], "only the refused append is built again under the lock"
        report = ledger.verify(trust)
    assert report.count == 5
    assert report.tree.proven_seq == 4


@pytest.mark.system
@pytest.mark.postgres
def test_another_writers_append_sends_the_next_one_through_the_lock(
    postgres_url: str,
    trainer: Signer,
    trust: TrustStore,
    register_model: Any,
    digest_of: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = fresh_database(postgres_url, "known_other")
    with open_ledger(url) as first, open_ledger(url) as second:
        for n in range(3):
            register_model(first, trainer, n)
        locked = _spy_locked(first, monkeypatch)
        register_model(second, trainer, 10)
        with pytest.raises(DuplicateRegistrationError):
            register_model(first, trainer, 10)
        stored = register_model(first, trainer, 11)
        assert locked == [digest_of(10), digest_of(11)]
        assert stored.seq == 4
        assert first.verify(trust).count == 5


@pytest.mark.system
@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "changed", "refused"),
    [
        # The head row, changed behind the writer: read again, then appended.
        ("UPDATE ztml_ledger SET record = record || ' ' WHERE seq = 2", None, None),
        # A subject's rows, changed behind the writer: read again, then refused.
        ("UPDATE ztml_ledger SET subject = %s WHERE seq = 0", 7, DuplicateRegistrationError),
    ],
    ids=["head-row", "subject"],
)
def test_a_row_changed_behind_the_writer_is_read_again_under_the_lock(
    change: str,
    changed: int | None,
    refused: type[Exception] | None,
    postgres_url: str,
    trainer: Signer,
    register_model: Any,
    digest_of: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = fresh_database(postgres_url, f"known_changed_{changed}")
    subject = 3 if changed is None else changed
    with open_ledger(url) as ledger:
        for n in range(3):
            register_model(ledger, trainer, n)
        locked = _spy_locked(ledger, monkeypatch)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(change, None if changed is None else (digest_of(changed),))
        if refused is None:
            register_model(ledger, trainer, subject)
        else:
            with pytest.raises(refused):
                register_model(ledger, trainer, subject)
        assert locked == [digest_of(subject)]


def _sqlite_reads(ledger: Ledger) -> list[str]:
    """Record each statement that reads the head and newest checkpoint for an append."""
    backend = ledger.backend
    assert isinstance(backend, SqliteBackend)
    reads: list[str] = []
    backend._conn.set_trace_callback(
        lambda sql: reads.append(sql) if sql.startswith("SELECT 0, ") else None
    )
    return reads


def test_lone_sqlite_writer_builds_from_what_it_knows(
    ledger: Ledger,
    trainer: Signer,
    approver: Signer,
    trust: TrustStore,
    register_model: Any,
    digest_of: Any,
) -> None:
    register_model(ledger, trainer, 1)
    reads = _sqlite_reads(ledger)
    register_model(ledger, trainer, 2)
    ledger.approve(digest_of(1), signer=approver, comment="ok")
    with pytest.raises(DuplicateRegistrationError):
        register_model(ledger, trainer, 2)
    assert ledger.approve(digest_of(2), signer=approver, comment="ok").seq == 3
    assert reads == [reads[0]], "only the append after the refused one reads again"
    report = ledger.verify(trust)
    assert report.count == 4
    assert report.tree.proven_seq == 3


def test_another_sqlite_connections_append_is_read_under_the_lock(
    tmp_path: Path, trainer: Signer, trust: TrustStore, register_model: Any, digest_of: Any
) -> None:
    path = tmp_path / "shared.db"
    with open_ledger(path) as first, open_ledger(path) as second:
        register_model(first, trainer, 0)
        register_model(first, trainer, 1)
        reads = _sqlite_reads(first)
        register_model(second, trainer, 10)
        with pytest.raises(DuplicateRegistrationError):
            register_model(first, trainer, 10)
        assert register_model(first, trainer, 11).seq == 3
        register_model(first, trainer, 12)
        assert len(reads) == 2, "the refused append and the one after it read"
        report = first.verify(trust)
    assert report.count == 5
    assert report.tree.proven_seq == 4


def test_a_row_changed_behind_the_sqlite_writer_is_read_again(
    tmp_path: Path, trainer: Signer, register_model: Any, digest_of: Any
) -> None:
    path = tmp_path / "changed.db"
    with open_ledger(path) as ledger:
        for n in range(3):
            register_model(ledger, trainer, n)
        reads = _sqlite_reads(ledger)
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE ledger SET subject = ? WHERE seq = 0", (digest_of(7),))
        with pytest.raises(DuplicateRegistrationError):
            register_model(ledger, trainer, 7)
        assert len(reads) == 1


def test_a_stored_checkpoint_sends_the_next_sqlite_append_through_the_read(
    ledger: Ledger, trainer: Signer, register_model: Any
) -> None:
    register_model(ledger, trainer, 0)
    latest = ledger.backend.latest_checkpoint()
    assert latest is not None
    reads = _sqlite_reads(ledger)
    ledger.backend.put_checkpoint(latest)
    register_model(ledger, trainer, 1)
    register_model(ledger, trainer, 2)
    assert len(reads) == 1
