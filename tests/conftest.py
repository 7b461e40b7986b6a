"""Shared fixtures: a real PostgreSQL server, and temp directories servers can reach."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from service.toolchain.postgres import postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL of a server started for this test session.

    Fails (never skips) when the PostgreSQL binaries are missing: run `scripts/run setup`.
    """
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _traversable_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """As root, ``ztml up`` runs its servers as an unprivileged user (service.stack).

    pytest makes its temp directories 0700; let that user traverse (not list) them so a
    ZTML_HOME under them is reachable. Nothing changes when the tests run as a normal user.
    """
    if os.geteuid() == 0:
        base = tmp_path_factory.getbasetemp()
        for directory in (base.parent, base):
            os.chmod(directory, 0o711)


@pytest.fixture(autouse=True)
def _traversable_tmp_path(request: pytest.FixtureRequest) -> None:
    """The same for a test's own ``tmp_path``, when it asks for one."""
    if os.geteuid() == 0 and "tmp_path" in request.fixturenames:
        os.chmod(request.getfixturevalue("tmp_path"), 0o711)
