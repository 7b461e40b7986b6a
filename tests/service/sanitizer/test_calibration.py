"""Detectors calibrated per modality: false positives, detection of PGD, verification."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy.ndimage import median_filter

from service.model.attacks import pgd
from service.model.contract import DIGITS_CONTRACT, ModelContract
from service.model.data import Splits
from service.sanitizer import (
    Calibration,
    CalibrationError,
    MedianSmoothing,
    build_detector,
    calibrate_detector,
    calibrate_threshold,
    data_digest,
    verify_calibration,
)
from service.sanitizer.tabular import COVARIANCE_FLOOR, fit

pytestmark = pytest.mark.slow

FPR = 0.05


def three_sigma(rate: float, n: int) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / n)


@pytest.fixture(scope="module")
def cancer_contract(cancer: dict[str, Any]) -> ModelContract:
    return dataclasses.replace(
        DIGITS_CONTRACT,
        name="breast-cancer",
        version="1.0.0",
        modality="tabular",
        shape=(30,),
        lower=cancer["lower"],
        upper=cancer["upper"],
        features=cancer["features"],
        image_layout=None,
        labels=("malignant", "benign"),
    )


@pytest.fixture(scope="module")
def cancer_calibration(cancer: dict[str, Any], cancer_contract: ModelContract) -> Calibration:
    return calibrate_detector(cancer["model"], cancer_contract, cancer["x_val"], fpr=FPR)


@pytest.fixture(scope="module")
def digits_calibration(digits_model: Any, digits_splits: Splits) -> Calibration:
    return calibrate_detector(digits_model, DIGITS_CONTRACT, digits_splits.x_val, fpr=FPR)


# -- images (the digits) -----------------------------------------------------------------


def test_digits_get_feature_squeezing_with_the_thresholds_of_the_existing_calibration(
    digits_model: Any, digits_splits: Splits, digits_calibration: Calibration
) -> None:
    assert digits_calibration.detector == "feature-squeezing"
    assert digits_calibration.parameters["image_layout"] == [1, 8, 8]
    expected = calibrate_threshold(digits_model, digits_splits.x_val, fpr=FPR)
    assert digits_calibration.threshold == pytest.approx(expected, rel=1e-6)
    n = digits_calibration.n
    assert n == digits_splits.x_val.shape[0]
    assert digits_calibration.fpr_measured <= math.floor(n * FPR) / n


def test_digits_false_positive_rate_on_held_out_data_is_the_target(
    digits_model: Any, digits_splits: Splits, digits_calibration: Calibration
) -> None:
    detector = build_detector(digits_model, DIGITS_CONTRACT, digits_calibration)
    rate = float(detector.analyze(digits_splits.x_test).flagged.mean())
    assert abs(rate - FPR) <= three_sigma(FPR, digits_splits.x_test.shape[0])


def test_digits_pgd_inputs_are_flagged_far_above_the_false_positive_rate(
    digits_model: Any, pgd_test_inputs: np.ndarray, digits_calibration: Calibration
) -> None:
    detector = build_detector(digits_model, DIGITS_CONTRACT, digits_calibration)
    result = detector.analyze(pgd_test_inputs)
    # Measured: all 150 PGD inputs (eps 0.2) on the tiny standard network flag.
    assert result.flagged.mean() >= 0.6
    assert result.flagged.mean() >= 4 * FPR
    assert set(result.per_component) == {"bits-3", "levels-9", "levels-10", "levels-14"}
    assert detector.kind == "feature-squeezing"


def test_analyze_returns_the_softmax_on_the_original_inputs(
    digits_model: Any, digits_splits: Splits, digits_calibration: Calibration
) -> None:
    x = digits_splits.x_test[:7]
    result = build_detector(digits_model, DIGITS_CONTRACT, digits_calibration).analyze(x)
    with torch.no_grad():
        expected = torch.softmax(digits_model(torch.from_numpy(x.copy())), dim=1).numpy()
    np.testing.assert_allclose(result.probs, expected, rtol=1e-5, atol=1e-6)


def test_median_smoothing_filters_every_channel_of_a_layout_on_its_own() -> None:
    x = torch.rand(4, 3 * 5 * 6, generator=torch.Generator().manual_seed(0))
    ours = MedianSmoothing(3, (3, 5, 6))(x).numpy().reshape(4, 3, 5, 6)
    for image, got in zip(x.numpy().reshape(4, 3, 5, 6), ours, strict=True):
        for channel, result in zip(image, got, strict=True):
            expected = median_filter(channel, size=3, mode="nearest")
            np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_an_image_model_of_another_layout_is_calibrated_with_its_layout() -> None:
    layout = (3, 4, 4)
    contract = dataclasses.replace(
        DIGITS_CONTRACT, shape=(48,), lower=np.zeros(48), upper=np.ones(48), image_layout=layout
    )
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(48, 10)).eval()
    x = np.random.default_rng(0).uniform(0, 1, (200, 48)).astype(np.float32)
    calibration = calibrate_detector(net, contract, x, fpr=FPR, squeezers=("bits-3", "median-2x2"))
    assert calibration.parameters == {
        "squeezers": ["bits-3", "median-2x2"],
        "image_layout": [3, 4, 4],
    }
    result = build_detector(net, contract, calibration).analyze(x[:5])
    assert result.scores.shape == (5,)
    verify_calibration(net, contract, x, calibration)


# -- tabular (breast cancer) -------------------------------------------------------------


def test_tabular_models_get_the_tabular_detector(cancer_calibration: Calibration) -> None:
    assert cancer_calibration.detector == "mahalanobis-noise"
    n = cancer_calibration.n
    assert cancer_calibration.fpr_measured <= math.floor(n * FPR) / n
    stored = len(json.dumps(cancer_calibration.document()))
    assert stored < 50_000


def test_tabular_false_positive_rate_on_held_out_data_is_the_target(
    cancer: dict[str, Any], cancer_contract: ModelContract, cancer_calibration: Calibration
) -> None:
    detector = build_detector(cancer["model"], cancer_contract, cancer_calibration)
    rate = float(detector.analyze(cancer["x_test"]).flagged.mean())
    assert abs(rate - FPR) <= three_sigma(FPR, cancer["x_test"].shape[0])


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.2])
def test_tabular_pgd_inputs_are_flagged_far_above_the_false_positive_rate(
    cancer: dict[str, Any],
    cancer_contract: ModelContract,
    cancer_calibration: Calibration,
    eps: float,
) -> None:
    model = cancer["model"]
    x, y = torch.from_numpy(cancer["x_test"]), torch.from_numpy(cancer["y_test"])
    adv = pgd(model, x, y, eps=eps, steps=20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fooled = (model(adv).argmax(dim=1) != y).numpy()
    assert fooled.sum() >= 20
    detector = build_detector(model, cancer_contract, cancer_calibration)
    rate = float(detector.analyze(adv.numpy()[fooled]).flagged.mean())
    # Measured with this seed and split: 0.74 (eps 0.05), 0.64 (0.1), 1.00 (0.2) of the
    # successful PGD inputs; 0.053 of the clean test inputs.
    assert rate >= 4 * FPR


def test_leave_one_out_scores_equal_refitting_without_each_input(cancer: dict[str, Any]) -> None:
    u = cancer["x_val"][:60].astype(np.float64)
    predicted = (u[:, 0] > np.median(u[:, 0])).astype(np.int64)
    _, loo = fit(u.astype(np.float32), predicted, 2)
    n, d = u.shape
    for i in (0, 7, 33):
        keep = np.arange(n) != i
        x, p = u[keep], predicted[keep]
        means = np.stack([x[p == c].mean(axis=0) for c in range(2)])
        r = x - means[p]
        covariance = r.T @ r / (x.shape[0] - 2) + COVARIANCE_FLOOR * np.eye(d)
        delta = u[i] - means[predicted[i]]
        expected = delta @ np.linalg.solve(covariance, delta)
        assert loo[i] == pytest.approx(expected, rel=1e-6)


def test_calibration_document_round_trips_through_json(cancer_calibration: Calibration) -> None:
    doc = json.loads(json.dumps(cancer_calibration.document()))
    assert Calibration.from_document(doc) == cancer_calibration


def test_calibration_data_digest_is_the_sha256_of_the_float32_bytes(
    cancer: dict[str, Any], cancer_calibration: Calibration
) -> None:
    import hashlib

    raw = np.ascontiguousarray(cancer["x_val"], dtype=np.float32).tobytes()
    assert cancer_calibration.data_digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert data_digest(cancer["x_val"].astype(np.float64)) == cancer_calibration.data_digest


# -- verification ------------------------------------------------------------------------


def test_verification_accepts_the_same_model_and_data(
    cancer: dict[str, Any], cancer_contract: ModelContract, cancer_calibration: Calibration
) -> None:
    verify_calibration(cancer["model"], cancer_contract, cancer["x_val"], cancer_calibration)


def test_verification_refuses_a_changed_threshold(
    cancer: dict[str, Any], cancer_contract: ModelContract, cancer_calibration: Calibration
) -> None:
    changed = dataclasses.replace(cancer_calibration, threshold=cancer_calibration.threshold * 1.01)
    with pytest.raises(CalibrationError, match=r"^calibration\.threshold: recomputed"):
        verify_calibration(cancer["model"], cancer_contract, cancer["x_val"], changed)


def test_verification_refuses_other_data(
    cancer: dict[str, Any], cancer_contract: ModelContract, cancer_calibration: Calibration
) -> None:
    other = cancer["x_val"].copy()
    other[3, 4] = 0.5
    with pytest.raises(CalibrationError, match=r"^calibration\.data_digest"):
        verify_calibration(cancer["model"], cancer_contract, other, cancer_calibration)


def test_verification_refuses_a_changed_parameter_naming_it(
    cancer: dict[str, Any], cancer_contract: ModelContract, cancer_calibration: Calibration
) -> None:
    doc = json.loads(json.dumps(cancer_calibration.document()))
    doc["parameters"]["mahalanobis"]["means"][1][3] += 1e-3
    changed = Calibration.from_document(doc)
    with pytest.raises(CalibrationError, match=r"parameters\.mahalanobis\.means\[1\]\[3\]"):
        verify_calibration(cancer["model"], cancer_contract, cancer["x_val"], changed)


def test_verification_refuses_another_network(
    cancer: dict[str, Any], cancer_contract: ModelContract, cancer_calibration: Calibration
) -> None:
    torch.manual_seed(1)
    other = torch.nn.Sequential(torch.nn.Linear(30, 2)).eval()
    with pytest.raises(CalibrationError, match=r"^calibration\."):
        verify_calibration(other, cancer_contract, cancer["x_val"], cancer_calibration)


def test_verification_refuses_a_changed_squeezing_threshold(
    digits_model: Any, digits_splits: Splits, digits_calibration: Calibration
) -> None:
    verify_calibration(digits_model, DIGITS_CONTRACT, digits_splits.x_val, digits_calibration)
    changed = dataclasses.replace(digits_calibration, threshold=digits_calibration.threshold + 0.01)
    with pytest.raises(CalibrationError, match=r"calibration\.threshold"):
        verify_calibration(digits_model, DIGITS_CONTRACT, digits_splits.x_val, changed)


def test_a_detector_of_the_other_modality_is_refused(
    cancer: dict[str, Any], cancer_contract: ModelContract, digits_calibration: Calibration
) -> None:
    with pytest.raises(CalibrationError, match=r"calibration\.detector"):
        build_detector(cancer["model"], cancer_contract, digits_calibration)


def test_calibration_refuses_too_few_inputs(
    cancer: dict[str, Any], cancer_contract: ModelContract
) -> None:
    with pytest.raises(CalibrationError, match="cannot resolve"):
        calibrate_detector(cancer["model"], cancer_contract, cancer["x_val"][:15], fpr=FPR)


def test_calibration_refuses_inputs_of_another_width(
    cancer: dict[str, Any], cancer_contract: ModelContract
) -> None:
    with pytest.raises(CalibrationError, match=r"\(N, 30\)"):
        calibrate_detector(cancer["model"], cancer_contract, np.zeros((100, 31)), fpr=FPR)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"detector": "magic"},
        {"detector": "feature-squeezing", "parameters": {}, "threshold": "0.1"},
    ],
)
def test_a_malformed_calibration_document_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(CalibrationError, match=r"^calibration\."):
        Calibration.from_document(doc)


def test_a_reference_set_fits_the_tabular_parameters_and_is_needed_to_verify(
    cancer: dict[str, Any], cancer_contract: ModelContract
) -> None:
    model, x_val = cancer["model"], cancer["x_val"]
    reference = cancer["x_test"]  # stands in for a training split
    calibration = calibrate_detector(
        model, cancer_contract, x_val, fpr=FPR, reference_unit=reference
    )
    assert calibration.parameters["reference_digest"] == data_digest(reference)
    assert calibration.data_digest == data_digest(x_val)
    n = calibration.n
    assert calibration.fpr_measured <= math.floor(n * FPR) / n
    verify_calibration(model, cancer_contract, x_val, calibration, reference_unit=reference)
    with pytest.raises(CalibrationError, match=r"^calibration\.parameters\.reference_digest"):
        verify_calibration(model, cancer_contract, x_val, calibration)
    with pytest.raises(CalibrationError, match=r"^calibration\.parameters\."):
        verify_calibration(
            model, cancer_contract, x_val, calibration, reference_unit=reference[:-1]
        )
