"""A real digits network and real PGD inputs, made once per session."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from service.model.attacks import pgd
from service.model.data import Splits, load_splits
from service.model.train import train


@pytest.fixture(scope="session")
def explainer_splits() -> Splits:
    return load_splits()


@pytest.fixture(scope="session")
def explainer_model() -> Any:
    model = train(defense="none", profile="tiny").model
    model.eval()
    return model


@pytest.fixture(scope="session")
def explainer_pgd_inputs(explainer_model: Any, explainer_splits: Splits) -> np.ndarray:
    """PGD-20 (eps 0.2) adversarial versions of the first 100 test images."""
    x = torch.from_numpy(explainer_splits.x_test[:100].copy())
    y = torch.from_numpy(explainer_splits.y_test[:100].copy())
    gen = torch.Generator().manual_seed(0)
    return pgd(explainer_model, x, y, eps=0.2, steps=20, generator=gen).numpy()
