"""Fixtures for checking a provisioned ztml stack.

The suite checks one target per ``--hosts`` entry (testinfra):

- ``local://`` — the local stack from ``ztml up``. By default the suite starts one with
  ``ztml up --detach`` in a temporary ``ZTML_HOME`` and stops it at the end; set
  ``ZTML_SYSTEM_HOME`` to the ``ZTML_HOME`` of a stack you started yourself to check that
  one instead.
- ``kubectl://<pod>?namespace=ztml&container=model`` — a pod of the Kubernetes stack from
  ``pulumi up``. Without a kube context these cases are skipped, with the reason.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.stack.state import StackState, read_state

ZTML = str(Path(sys.executable).with_name("ztml"))


@dataclass(frozen=True)
class LocalStack:
    """A running local stack: its state file, home directory and environment."""

    home: Path
    state: StackState
    env: dict[str, str]

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """How a caller verifies the service: the stack's CA (``curl --cacert``)."""
        return self.state.caller_context()

    def ztml(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a ``ztml`` command against this stack's home."""
        return subprocess.run(
            [ZTML, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def local_stack(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[LocalStack]:
    """The local stack under test (started here unless ZTML_SYSTEM_HOME names one).

    The demo model is the tests' cached PGD-trained one, installed (registered and
    approved) before ``ztml up`` so that ``up`` reuses it instead of training.
    """
    from tests.service.app.harness import cached_demo_model, install_demo_model

    if existing := os.environ.get("ZTML_SYSTEM_HOME"):
        home = Path(existing)
        state = read_state(home)
        if state is None:
            pytest.fail(f"ZTML_SYSTEM_HOME={home} has no running stack: run `ztml up --detach`.")
        yield LocalStack(home, state, {**os.environ, "ZTML_HOME": str(home)})
        return
    home = tmp_path_factory.mktemp("system-home")
    # The load generator, OPA and the workers share two cores here: give OPA decisions
    # 1 s instead of the default 250 ms, so a scheduling stall is not counted as an error.
    env = {**os.environ, "ZTML_HOME": str(home), "ZTML_OPA_TIMEOUT_MS": "1000"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZTML_HOME", str(home))
        install_demo_model(home, cached_demo_model(pytestconfig))
    started = subprocess.run(
        [ZTML, "up", "--detach", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert started.returncode == 0, f"ztml up failed:\n{started.stdout}\n{started.stderr}"
    state = read_state(home)
    assert state is not None, "ztml up --detach wrote no state file"
    stack = LocalStack(home, state, env)
    try:
        yield stack
    finally:
        stack.ztml("down")
