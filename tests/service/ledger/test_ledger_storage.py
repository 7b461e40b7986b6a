"""Backends by URL, SQLite settings, init and default locations."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from service.ledger import (
    BackendError,
    LedgerExistsError,
    LedgerNotFoundError,
    default_ledger_url,
    init_ledger,
    open_ledger,
)
from service.ledger.storage import redact_url
from service.ledger.storage.sqlite import SqliteBackend


@pytest.mark.parametrize("form", ["plain", "sqlite"])
def test_paths_and_sqlite_urls_open_sqlite(tmp_path: Path, form: str) -> None:
    path = tmp_path / "l.db"
    url = str(path) if form == "plain" else f"sqlite://{path}"
    with open_ledger(url) as ledger:
        assert isinstance(ledger.backend, SqliteBackend) and ledger.backend.path == path
    assert path.is_file()


def test_relative_sqlite_url_is_refused() -> None:
    with pytest.raises(BackendError, match="sqlite:///absolute"):
        open_ledger("sqlite://relative.db")


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(BackendError, match="not supported"):
        open_ledger("mysql://u:secret@h/db")


def test_password_is_redacted() -> None:
    assert redact_url("postgresql://u:s3cret@h:5/db") == "postgresql://u:***@h:5/db"


def test_missing_ledger_is_not_created_when_reading(tmp_path: Path) -> None:
    with pytest.raises(LedgerNotFoundError, match="ztml ledger init"):
        open_ledger(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_sqlite_ledger_uses_wal_and_full_sync(tmp_path: Path) -> None:
    with open_ledger(tmp_path / "l.db") as ledger:
        assert isinstance(ledger.backend, SqliteBackend)
        conn = ledger.backend._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == b"wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_init_refuses_a_non_empty_ledger(tmp_path: Path, trainer: Any, register_model: Any) -> None:
    path = tmp_path / "l.db"
    with init_ledger(path) as ledger:
        register_model(ledger, trainer, 1)
    before = path.read_bytes()
    with pytest.raises(LedgerExistsError, match="left untouched"):
        init_ledger(path)
    with open_ledger(path) as ledger:
        assert ledger.count() == 1
    assert len(before) > 0


def test_not_a_database_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BackendError, match="Cannot open ledger"):
        open_ledger(path)


def test_database_without_ledger_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(LedgerNotFoundError, match="without a ledger table"):
        open_ledger(path, create=False)


def test_default_ledger_lives_in_ztml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    monkeypatch.delenv("ZTML_LEDGER_URL", raising=False)
    assert default_ledger_url() == str(tmp_path / "ledger.db")


def test_ledger_url_environment_overrides_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    monkeypatch.setenv("ZTML_LEDGER_URL", "postgresql://u@h/db")
    assert default_ledger_url() == "postgresql://u@h/db"


@pytest.mark.parametrize("page_size", [1, 2, 4, 5])
def test_rows_are_read_page_by_page_without_gaps_or_repeats(
    tmp_path: Path, trainer: Any, register_model: Any, page_size: int
) -> None:
    with init_ledger(tmp_path / "l.db") as ledger:
        for n in range(4):
            register_model(ledger, trainer, n)
        rows = list(ledger.backend.rows(start=1, page_size=page_size))
    assert [row.seq for row in rows] == [1, 2, 3]
