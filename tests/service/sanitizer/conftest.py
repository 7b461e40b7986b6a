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


@pytest.fixture(scope="session")
def cancer() -> dict[str, Any]:
    """Breast-cancer data in unit space (60/20/20 split) and a small MLP trained on it."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x = data.data.astype(np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    u = ((x - lo) / (hi - lo)).astype(np.float32)
    y = data.target.astype(np.int64)
    u_tr, u_rest, y_tr, y_rest = train_test_split(u, y, test_size=0.4, stratify=y, random_state=0)
    u_va, u_te, y_va, y_te = train_test_split(
        u_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=0
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(30, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 2),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    xt, yt = torch.from_numpy(u_tr), torch.from_numpy(y_tr)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        optimizer.step()
    model.eval()
    return {
        "model": model,
        "lower": lo,
        "upper": hi,
        "features": tuple(str(f) for f in data.feature_names),
        "x_val": u_va,
        "y_val": y_va,
        "x_test": u_te,
        "y_test": y_te,
    }
