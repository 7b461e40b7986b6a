"""Feature-squeezing detection on the real digits network and real PGD inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from service.model.data import Splits
from service.sanitizer import (
    BitDepth,
    CalibrationError,
    FeatureSqueezer,
    MedianSmoothing,
    PerturbationDetectedError,
    Quantize,
    calibrate_threshold,
    squeezer_from_name,
)
from service.sanitizer.detector import _squeeze_into
from service.sanitizer.squeezers import DEFAULT_SQUEEZER_NAMES, Squeezer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def threshold(digits_model: Any, digits_splits: Splits) -> float:
    return calibrate_threshold(digits_model, digits_splits.x_val, fpr=0.05)


def test_calibration_flags_at_most_the_chosen_share_of_clean_validation_inputs(
    digits_model: Any, digits_splits: Splits, threshold: float
) -> None:
    detector = FeatureSqueezer(digits_model, threshold=threshold)
    assert detector.flags(digits_splits.x_val).mean() <= 0.05


def test_stricter_false_positive_rate_gives_higher_threshold(
    digits_model: Any, digits_splits: Splits, threshold: float
) -> None:
    assert calibrate_threshold(digits_model, digits_splits.x_val, fpr=0.01) >= threshold


def test_pgd_inputs_are_flagged_far_more_often_than_clean_test_inputs(
    digits_model: Any, digits_splits: Splits, pgd_test_inputs: np.ndarray, threshold: float
) -> None:
    detector = FeatureSqueezer(digits_model, threshold=threshold)
    clean_rate = detector.flags(digits_splits.x_test[:150]).mean()
    attack_rate = detector.flags(pgd_test_inputs).mean()
    assert attack_rate >= 0.6
    assert attack_rate >= clean_rate + 0.4


def test_pgd_inputs_on_the_pgd_trained_model_are_flagged_far_more_than_clean_inputs(
    robust_digits_model: Any, digits_splits: Splits, robust_pgd_test_inputs: np.ndarray
) -> None:
    threshold = calibrate_threshold(robust_digits_model, digits_splits.x_val, fpr=0.05)
    detector = FeatureSqueezer(robust_digits_model, threshold=threshold)
    clean_rate = detector.flags(digits_splits.x_test[:150]).mean()
    attack_rate = detector.flags(robust_pgd_test_inputs).mean()
    assert attack_rate >= 0.85
    assert attack_rate >= clean_rate + 0.6


def test_default_squeezers_flag_more_pgd_inputs_than_the_papers_setting_on_digits(
    robust_digits_model: Any, digits_splits: Splits, robust_pgd_test_inputs: np.ndarray
) -> None:
    paper = [squeezer_from_name(n) for n in ("bits-1", "median-2x2", "median-3x3")]
    rates = []
    for squeezers in (None, paper):
        threshold = calibrate_threshold(
            robust_digits_model, digits_splits.x_val, fpr=0.05, squeezers=squeezers
        )
        detector = FeatureSqueezer(robust_digits_model, threshold=threshold, squeezers=squeezers)
        rates.append(detector.flags(robust_pgd_test_inputs).mean())
    assert rates[0] > rates[1] + 0.5


def _one_pass_per_squeezer(
    model: Any, x: np.ndarray, squeezers: list[Squeezer]
) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        tensor = torch.from_numpy(x.copy())
        clean = torch.softmax(model(tensor), dim=1)
        distances = [
            (clean - torch.softmax(model(squeeze(tensor)), dim=1)).abs().sum(dim=1).numpy()
            for squeeze in squeezers
        ]
    return clean.numpy(), np.stack(distances)


def test_batched_scoring_equals_one_forward_pass_per_squeezer(
    digits_model: Any, digits_splits: Splits, pgd_test_inputs: np.ndarray
) -> None:
    squeezers = [squeezer_from_name(n) for n in (*DEFAULT_SQUEEZER_NAMES, "median-2x2")]
    x = np.concatenate([digits_splits.x_test[:40], pgd_test_inputs[:40]])
    result = FeatureSqueezer(digits_model, threshold=0.1, squeezers=squeezers).analyze(x)
    probs, distances = _one_pass_per_squeezer(digits_model, x, squeezers)
    np.testing.assert_allclose(result.probs, probs, atol=1e-6)
    np.testing.assert_allclose(np.stack(list(result.per_squeezer.values())), distances, atol=1e-6)
    np.testing.assert_allclose(result.scores, distances.max(axis=0), atol=1e-6)


@pytest.mark.parametrize(
    "squeezers",
    [
        [BitDepth(3), Quantize(9), Quantize(10), Quantize(14)],
        [BitDepth(3), MedianSmoothing(2), Quantize(9), MedianSmoothing(3), BitDepth(1)],
    ],
    ids=["quantizers", "mixed"],
)
def test_squeezers_applied_together_equal_each_squeezer_called_alone(
    squeezers: list[Squeezer],
) -> None:
    x = torch.rand(9, 64, generator=torch.Generator().manual_seed(3)) * 1.2 - 0.1
    x[0, :17] = torch.arange(17) / 16  # the digits' grid, with ties at half a level
    out = np.full((len(squeezers), 9, 64), np.nan, dtype=np.float32)
    _squeeze_into(x.numpy(), squeezers, out)
    for squeeze, copy in zip(squeezers, out, strict=True):
        np.testing.assert_array_equal(copy, squeeze(x).numpy(), err_msg=squeeze.name)


def test_a_tensor_that_requires_grad_scores_like_the_same_numpy_array(
    digits_model: Any, digits_splits: Splits
) -> None:
    x = digits_splits.x_test[:5]
    detector = FeatureSqueezer(digits_model, threshold=0.1)
    tensor = torch.from_numpy(x.copy()).requires_grad_(True)
    np.testing.assert_array_equal(detector.scores(tensor), detector.scores(x))


def test_pgd_inputs_score_higher_than_clean_inputs_on_average(
    digits_model: Any, digits_splits: Splits, pgd_test_inputs: np.ndarray, threshold: float
) -> None:
    detector = FeatureSqueezer(digits_model, threshold=threshold)
    assert (
        detector.scores(pgd_test_inputs).mean()
        > 2 * detector.scores(digits_splits.x_test[:150]).mean()
    )


def test_scores_are_the_max_over_squeezers_and_lie_in_zero_two(
    digits_model: Any, pgd_test_inputs: np.ndarray, threshold: float
) -> None:
    result = FeatureSqueezer(digits_model, threshold=threshold).analyze(pgd_test_inputs)
    stacked = np.stack(list(result.per_squeezer.values()))
    np.testing.assert_allclose(result.scores, stacked.max(axis=0), rtol=1e-6)
    assert ((result.scores >= 0) & (result.scores <= 2 + 1e-6)).all()


def test_analyze_returns_the_model_probabilities(
    digits_model: Any, digits_splits: Splits, threshold: float
) -> None:
    x = digits_splits.x_test[:10]
    result = FeatureSqueezer(digits_model, threshold=threshold).analyze(x)
    with torch.no_grad():
        expected = torch.softmax(digits_model(torch.from_numpy(x.copy())), dim=1).numpy()
    np.testing.assert_allclose(result.probs, expected, rtol=1e-5, atol=1e-6)


def test_check_raises_naming_the_flagged_instances(
    digits_model: Any, digits_splits: Splits, pgd_test_inputs: np.ndarray, threshold: float
) -> None:
    detector = FeatureSqueezer(digits_model, threshold=threshold)
    flagged = np.flatnonzero(detector.flags(pgd_test_inputs))
    batch = np.concatenate([digits_splits.x_test[:1], pgd_test_inputs[flagged[:1]]])
    with pytest.raises(PerturbationDetectedError) as info:
        detector.check(batch)
    assert 1 in info.value.indices


def test_check_passes_a_confidently_classified_clean_input(
    digits_model: Any, digits_splits: Splits, threshold: float
) -> None:
    detector = FeatureSqueezer(digits_model, threshold=threshold)
    scores = detector.scores(digits_splits.x_test[:50])
    detector.check(digits_splits.x_test[[int(np.argmin(scores))]])


def test_custom_squeezers_are_used(digits_model: Any, digits_splits: Splits) -> None:
    detector = FeatureSqueezer(digits_model, threshold=1.0, squeezers=[MedianSmoothing(3)])
    assert list(detector.analyze(digits_splits.x_test[:3]).per_squeezer) == ["median-3x3"]


def test_calibration_refuses_too_few_inputs(digits_model: Any, digits_splits: Splits) -> None:
    with pytest.raises(CalibrationError, match="cannot resolve"):
        calibrate_threshold(digits_model, digits_splits.x_val[:10], fpr=0.05)


@pytest.mark.parametrize("fpr", [0.0, 1.0, -0.1, float("nan")])
def test_calibration_refuses_a_bad_false_positive_rate(
    digits_model: Any, digits_splits: Splits, fpr: float
) -> None:
    with pytest.raises(CalibrationError, match="false-positive rate"):
        calibrate_threshold(digits_model, digits_splits.x_val, fpr=fpr)


def test_calibration_refuses_wrongly_shaped_inputs(digits_model: Any) -> None:
    with pytest.raises(CalibrationError, match=r"\(N, 64\)"):
        calibrate_threshold(digits_model, np.zeros((100, 63), dtype=np.float32))


@pytest.mark.parametrize("threshold", [-0.1, 2.5, float("nan")])
def test_bad_threshold_is_refused(digits_model: Any, threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        FeatureSqueezer(digits_model, threshold=threshold)
