"""Captum attributions for the digits network."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from service.explainer import ExplanationInputError, explain
from service.model.data import Splits

pytestmark = pytest.mark.slow


def logits(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.array(x, dtype=np.float32))).numpy()


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
def test_attributions_are_finite_and_shaped_like_the_inputs(
    explainer_model: Any, explainer_splits: Splits, method: Any
) -> None:
    attributions = explain(explainer_model, explainer_splits.x_test[:5], method=method)
    assert attributions.shape == (5, 64)
    assert attributions.dtype == np.float32
    assert np.isfinite(attributions).all()
    assert np.abs(attributions).sum() > 0


def test_integrated_gradients_is_complete_for_the_predicted_logit(
    explainer_model: Any, explainer_splits: Splits
) -> None:
    x = explainer_splits.x_test[:8]
    attributions = explain(explainer_model, x, n_steps=64)
    out = logits(explainer_model, x)
    predicted = out.argmax(axis=1)
    baseline = logits(explainer_model, np.zeros_like(x))
    rows = np.arange(len(x))
    expected = out[rows, predicted] - baseline[rows, predicted]
    np.testing.assert_allclose(attributions.sum(axis=1), expected, rtol=0.05, atol=0.05)


def test_explicit_target_is_explained_instead_of_the_prediction(
    explainer_model: Any, explainer_splits: Splits
) -> None:
    x = explainer_splits.x_test[:1]
    predicted = int(logits(explainer_model, x).argmax())
    other = (predicted + 1) % 10
    attributions = explain(explainer_model, x, target=other, n_steps=64)
    expected = logits(explainer_model, x)[0, other] - logits(explainer_model, 0 * x)[0, other]
    assert attributions.sum() == pytest.approx(expected, rel=0.05, abs=0.05)


def test_explanations_differ_per_class(explainer_model: Any, explainer_splits: Splits) -> None:
    x = np.repeat(explainer_splits.x_test[:1], 10, axis=0)
    attributions = explain(explainer_model, x, target=list(range(10)))
    for a in range(10):
        for b in range(a + 1, 10):
            assert not np.allclose(attributions[a], attributions[b], atol=1e-4)


def test_saliency_is_non_negative(explainer_model: Any, explainer_splits: Splits) -> None:
    attributions = explain(explainer_model, explainer_splits.x_test[:3], method="saliency")
    assert (attributions >= 0).all()


def test_explaining_does_not_change_the_model(
    explainer_model: Any, explainer_splits: Splits
) -> None:
    params = list(explainer_model.parameters())
    before = [p.detach().clone() for p in params]
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    explain(explainer_model, explainer_splits.x_test[:2])
    assert all(torch.equal(b, p) for b, p in zip(before, params, strict=True))
    for grad, p in zip(grads, params, strict=True):
        assert (grad is None and p.grad is None) or torch.equal(grad, p.grad)


def test_works_inside_a_no_grad_block(explainer_model: Any, explainer_splits: Splits) -> None:
    with torch.no_grad():
        attributions = explain(explainer_model, explainer_splits.x_test[:2], method="saliency")
    assert np.abs(attributions).sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "lime"}, "unknown method"),
        ({"n_steps": 0}, "n_steps"),
        ({"target": 10}, "not a class"),
        ({"target": [1, 2, 3]}, "targets for 2 inputs"),
        ({"target": [True, False]}, "class indices"),
    ],
)
def test_bad_arguments_are_rejected(
    explainer_model: Any, explainer_splits: Splits, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ExplanationInputError, match=match):
        explain(explainer_model, explainer_splits.x_test[:2], **kwargs)


@pytest.mark.parametrize(
    "x", [np.zeros((2, 63)), np.zeros((0, 64)), np.full((1, 64), np.nan), [["a"] * 64]]
)
def test_bad_inputs_are_rejected(explainer_model: Any, x: Any) -> None:
    with pytest.raises(ExplanationInputError):
        explain(explainer_model, x)
