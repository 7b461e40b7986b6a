"""Properties only the local stack (``ztml up``) has, checked with pytest-testinfra."""

from __future__ import annotations

import pytest

from tests.system.targets import Target, listening

pytestmark = [pytest.mark.system, pytest.mark.slow]

testinfra_hosts = ["local://"]


def test_local_listeners_are_bound_to_loopback_only(host, target: Target):
    assert target.kind == "local"
    found = listening(host, target)
    assert found, "no listener of the stack was found"
    assert all(addr == "127.0.0.1" for addr, _ in found)
