"""Shared fixtures: a real PostgreSQL server for tests marked ``postgres``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres_server import postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL of a server started for this test session.

    Fails (never skips) when the PostgreSQL binaries are missing: run `scripts/run setup`.
    """
    with postgres_server() as url:
        yield url
