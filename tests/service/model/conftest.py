"""Models trained once per test session (the fast profiles: seconds each) and test data."""

from __future__ import annotations

import pytest
import torch

from service.model.data import load_splits
from service.model.train import train
from tests.service.model.trained_models import Trained


@pytest.fixture(scope="session")
def trained() -> Trained:
    """The standard and PGD-adversarially trained models of the fast profile."""
    standard = train("none", "fast").model
    adversarial = train("pgd", "fast").model
    return Trained(standard, adversarial)


@pytest.fixture(scope="session")
def test_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The test split as tensors."""
    splits = load_splits()
    return torch.from_numpy(splits.x_test.copy()), torch.from_numpy(splits.y_test.copy())


@pytest.fixture(autouse=True)
def _isolated_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path_factory.mktemp("ztml_home")))
    monkeypatch.delenv("ZTML_LEDGER_URL", raising=False)
