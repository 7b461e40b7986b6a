"""The running stack shared by the model service's system tests (started once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.app.harness import Stack, cached_demo_model, install_demo_model


@pytest.fixture(scope="session")
def demo_model_source(pytestconfig: pytest.Config) -> Path:
    """The cached PGD-trained test model (trained on the first run only)."""
    return cached_demo_model(pytestconfig)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_model_source: Path) -> Iterator[Stack]:
    """Real OPA and `bentoml serve` with a real ledger and audit log in a tmp ZTML_HOME.

    The service serves TLS from the stack's CA and takes client certificates when offered
    (``optional``: callers without one are served too).
    """
    from service.stack.runner import StackOptions, start_stack
    from service.stack.state import clear_state

    home = tmp_path_factory.mktemp("ztml-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZTML_HOME", str(home))
        model = install_demo_model(home, demo_model_source)
        state = start_stack(
            StackOptions(
                home=home,
                model_path=model.path,
                model_digest=model.digest,
                workers=1,
                extra_env={"ZTML_RATE_BURST": "12", "ZTML_REQUEST_TIMEOUT_MS": "8000"},
                client_auth="optional",
            )
        )
        running = Stack.started(home, state, model)
        try:
            yield running
        finally:
            running.stop()
            clear_state(home)
