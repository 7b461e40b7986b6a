"""Attributions for networks of other widths (a 30-feature tabular network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.explainer import ExplanationInputError, explain


@pytest.fixture(scope="module")
def net30() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(30, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
    ).eval()


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
@pytest.mark.parametrize("n_features", [30, None])
def test_attributions_of_a_30_feature_network(
    net30: torch.nn.Module, method: str, n_features: int | None
) -> None:
    x = np.random.default_rng(0).uniform(size=(4, 30)).astype(np.float32)
    a = explain(net30, x, method=method, n_features=n_features)  # type: ignore[arg-type]
    assert a.shape == (4, 30)
    assert np.isfinite(a).all()


def test_integrated_gradients_is_complete_for_30_features(net30: torch.nn.Module) -> None:
    x = np.random.default_rng(1).uniform(size=(3, 30)).astype(np.float32)
    a = explain(net30, x, n_steps=64, n_features=30)
    with torch.no_grad():
        out = net30(torch.from_numpy(x))
        base = net30(torch.zeros(3, 30))
    predicted = out.argmax(dim=1)
    expected = (out - base)[torch.arange(3), predicted].numpy()
    np.testing.assert_allclose(a.sum(axis=1), expected, rtol=1e-3, atol=1e-4)


def test_the_default_width_is_the_digits(net30: torch.nn.Module) -> None:
    with pytest.raises(ExplanationInputError, match=r"\(N, 64\)"):
        explain(net30, np.zeros((1, 30), dtype=np.float32))


def test_a_width_other_than_the_given_one_is_refused(net30: torch.nn.Module) -> None:
    with pytest.raises(ExplanationInputError, match=r"\(N, 30\)"):
        explain(net30, np.zeros((1, 31), dtype=np.float32), n_features=30)
