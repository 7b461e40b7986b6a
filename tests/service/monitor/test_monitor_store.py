"""The shared monitor database: WAL mode, default location, failing closed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service.monitor import MonitorStoreError, RateLimiter, default_db_path
from service.monitor.store import MonitorStore


def test_default_database_lives_in_ztml_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "run" / "monitor.db"
    RateLimiter().acquire("alice", rate_per_minute=60, burst=1)
    assert (tmp_path / "run" / "monitor.db").exists()


def test_database_uses_wal(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    RateLimiter(db).acquire("alice", rate_per_minute=60, burst=1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unwritable_location_fails_closed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(MonitorStoreError, match="writable"):
        RateLimiter(blocker / "monitor.db").acquire("alice", rate_per_minute=60, burst=1)


def test_corrupt_database_fails_closed(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MonitorStoreError):
        RateLimiter(db).acquire("alice", rate_per_minute=60, burst=1)


def test_failed_block_is_rolled_back(tmp_path: Path) -> None:
    store = MonitorStore(tmp_path / "m.db", schema="CREATE TABLE IF NOT EXISTS t (v INTEGER)")

    def insert_then_fail() -> None:
        with store.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        insert_then_fail()
    with store.transaction() as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
