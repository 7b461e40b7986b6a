"""The throwaway PostgreSQL server: it fails loudly without binaries and serves a real ledger."""

from __future__ import annotations

import psycopg
import pytest

import service.toolchain.postgres as postgres
from service.toolchain.errors import ToolMissingError


def test_server_fails_loudly_without_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "find_postgres_bin", lambda: None)
    with (
        pytest.raises(ToolMissingError, match="scripts/run setup"),
        postgres.postgres_server(),
    ):
        pass


@pytest.mark.system
@pytest.mark.postgres
def test_fresh_database_is_empty_and_on_the_same_server(postgres_url: str) -> None:
    url = postgres.fresh_database(postgres_url, "toolchain_fresh")
    assert url.rsplit("/", 1) == [postgres_url.rsplit("/", 1)[0], "toolchain_fresh"]
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)
