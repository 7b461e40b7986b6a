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


def test_a_new_database_and_its_wal_are_readable_by_the_owner_only(tmp_path):
    import stat

    from service.toolchain.sqlite import connect_shared

    path = tmp_path / "records.db"
    conn = connect_shared(path, busy_timeout_ms=100, synchronous="NORMAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    for file in (path, path.with_name("records.db-wal")):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    conn.close()
