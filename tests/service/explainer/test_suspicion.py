"""The suspicion score combines confidence margin and squeezing disagreement."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from service.explainer import SuspicionInputError, suspicion_score
from service.model.data import Splits
from service.sanitizer import FeatureSqueezer, calibrate_threshold

CONFIDENT = np.array([0.97, 0.01, 0.005, 0.005, 0.002, 0.002, 0.002, 0.002, 0.001, 0.001])
TORN = np.array([0.45, 0.44, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.02])


def test_confident_agreeing_input_scores_low() -> None:
    assert suspicion_score(CONFIDENT, 0.0, squeeze_threshold=0.2) < 0.1


def test_small_margin_raises_suspicion() -> None:
    low = suspicion_score(CONFIDENT, 0.0, squeeze_threshold=0.2)
    assert suspicion_score(TORN, 0.0, squeeze_threshold=0.2) > low + 0.5


def test_squeeze_score_at_the_threshold_counts_half() -> None:
    uniform_margin = np.array([1.0] + [0.0] * 9)
    assert suspicion_score(uniform_margin, 0.2, squeeze_threshold=0.2) == pytest.approx(0.5)


def test_higher_squeeze_score_means_higher_suspicion() -> None:
    scores = [suspicion_score(CONFIDENT, s, squeeze_threshold=0.2) for s in (0.0, 0.1, 0.4, 1.5)]
    assert scores == sorted(scores)
    assert scores[-1] > 0.9


def test_score_stays_within_zero_one() -> None:
    assert 0.0 <= suspicion_score(TORN, 2.0, squeeze_threshold=0.01) <= 1.0


def test_batch_score_is_the_most_suspicious_input() -> None:
    batch = np.stack([CONFIDENT, TORN])
    expected = suspicion_score(TORN, 0.1, squeeze_threshold=0.2)
    assert suspicion_score(batch, [0.0, 0.1], squeeze_threshold=0.2) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("probs", "score", "match"),
    [
        (np.array([0.5, 0.6]), 0.0, "probabilities"),
        (np.array([1.0]), 0.0, "shape"),
        (np.stack([CONFIDENT, TORN]), [0.1], "2 inputs"),
        (CONFIDENT, float("nan"), "finite"),
        ("abc", 0.0, "numeric"),
    ],
)
def test_malformed_inputs_are_rejected(probs: Any, score: Any, match: str) -> None:
    with pytest.raises(SuspicionInputError, match=match):
        suspicion_score(probs, score, squeeze_threshold=0.2)


def test_non_positive_threshold_is_rejected() -> None:
    with pytest.raises(SuspicionInputError, match="squeeze_threshold"):
        suspicion_score(CONFIDENT, 0.0, squeeze_threshold=0.0)


@pytest.mark.slow
def test_pgd_inputs_are_more_suspicious_than_clean_ones_on_average(
    explainer_model: Any, explainer_splits: Splits, explainer_pgd_inputs: np.ndarray
) -> None:
    threshold = calibrate_threshold(explainer_model, explainer_splits.x_val)
    detector = FeatureSqueezer(explainer_model, threshold=threshold)

    def mean_suspicion(x: np.ndarray) -> float:
        result = detector.analyze(x)
        return float(
            np.mean(
                [
                    suspicion_score(p, s, squeeze_threshold=threshold)
                    for p, s in zip(result.probs, result.scores, strict=True)
                ]
            )
        )

    clean = mean_suspicion(explainer_splits.x_test[:100])
    attacked = mean_suspicion(explainer_pgd_inputs)
    assert clean < 0.3
    assert attacked > clean + 0.3
    with torch.no_grad():
        assert explainer_model(torch.from_numpy(explainer_pgd_inputs)).shape == (100, 10)
