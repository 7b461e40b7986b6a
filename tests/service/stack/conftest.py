"""A ZTML_HOME holding the cached test model, so `ztml up` needs no training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.service.app.harness import cached_demo_model


@pytest.fixture(scope="session")
def stack_model_source(pytestconfig: pytest.Config) -> Path:
    """The cached PGD-trained test model (trained on the first run only)."""
    return cached_demo_model(pytestconfig)


@pytest.fixture
def up_home(tmp_path: Path, stack_model_source: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ZTML_HOME whose demo model directory already holds the test model."""
    from service.stack.provision import demo_model_dir

    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    shutil.copytree(stack_model_source, demo_model_dir(tmp_path))
    return tmp_path
