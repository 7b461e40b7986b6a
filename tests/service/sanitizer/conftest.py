"""Real digits networks (tiny profile) trained once per session, and PGD inputs for them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from service.model.attacks import pgd
from service.model.data import Splits, load_splits
from service.model.train import train


def _pgd_inputs(model: Any, splits: Splits) -> np.ndarray:
    x = torch.from_numpy(splits.x_test[:150].copy())
    y = torch.from_numpy(splits.y_test[:150].copy())
    adv = pgd(model, x, y, eps=0.2, steps=20, generator=torch.Generator().manual_seed(0))
    return adv.numpy()


@pytest.fixture(scope="session")
def digits_splits() -> Splits:
    return load_splits()


@pytest.fixture(scope="session")
def digits_model() -> Any:
    model = train(defense="none", profile="tiny").model
    model.eval()
    return model


@pytest.fixture(scope="session")
def robust_digits_model() -> Any:
    """The PGD-adversarially-trained network (the kind the service serves), tiny profile."""
    model = train(defense="pgd", profile="tiny").model
    model.eval()
    return model


@pytest.fixture(scope="session")
def pgd_test_inputs(digits_model: Any, digits_splits: Splits) -> np.ndarray:
    """PGD-20 (eps 0.2) adversarial versions of the first 150 test images."""
    return _pgd_inputs(digits_model, digits_splits)


@pytest.fixture(scope="session")
def robust_pgd_test_inputs(robust_digits_model: Any, digits_splits: Splits) -> np.ndarray:
    """PGD-20 (eps 0.2) inputs against the PGD-trained network, first 150 test images."""
    return _pgd_inputs(robust_digits_model, digits_splits)
