import sqlite3
from pathlib import Path

import pytest

from service.toolchain.sqlite import connect_shared


def test_shared_connection_uses_wal_and_the_busy_timeout(tmp_path: Path) -> None:
    conn = connect_shared(tmp_path / "x.db", busy_timeout_ms=1234, synchronous="FULL")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.isolation_level is None
    finally:
        conn.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        connect_shared(path, busy_timeout_ms=100, synchronous="NORMAL")
