"""Shared fixtures: a real PostgreSQL server, and temp directories servers can reach.

The local cluster and the stack deployed onto it are session fixtures of two plugins
shared by the cluster tests and the system tests. Tests that end shared things run
last, in this order: those that disrupt the local stack, the one that destroys the
deployed stack, and the one that takes the cluster down and up again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from service.toolchain.postgres import postgres_server

pytest_plugins = (
    "tests.service.cluster.fixtures",
    "tests.system.cluster_stack",
    "tests.system.targets",
)
RUN_LAST = ("disruptive", "stack_destroy", "scaled_stack", "cluster_lifecycle")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests that end shared things to the end, in :data:`RUN_LAST` order."""

    def rank(item: pytest.Item) -> int:
        return next(
            (n + 1 for n, marker in enumerate(RUN_LAST) if item.get_closest_marker(marker)), 0
        )

    items.sort(key=rank)


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
