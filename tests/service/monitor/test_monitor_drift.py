"""Drift: clean digits stay quiet, shifted or noisy digits are reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from service.monitor import DriftMonitor, MonitorConfigError, MonitorInputError
from service.monitor.drift import benjamini_hochberg


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """(reference, held-out) digit rows in [0, 1], split 60/40 with a fixed seed."""
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    x = np.loadtxt(path, delimiter=",", dtype=np.float32)[:, :64] / 16.0
    order = np.random.default_rng(20261122).permutation(len(x))
    cut = int(0.6 * len(x))
    return x[order[:cut]], x[order[cut:]]


@pytest.fixture(scope="module")
def monitor(digits: tuple[np.ndarray, np.ndarray]) -> DriftMonitor:
    return DriftMonitor(digits[0], window=200, alpha=0.01)


def test_clean_rows_do_not_drift(monitor: DriftMonitor, digits: tuple[np.ndarray, ...]) -> None:
    rng = np.random.default_rng(0)
    for _ in range(10):
        rows = digits[1][rng.choice(len(digits[1]), 200, replace=False)]
        result = monitor.test(rows)
        assert not result.drifted, result


def test_noisy_rows_drift(monitor: DriftMonitor, digits: tuple[np.ndarray, ...]) -> None:
    rows = digits[1][:200]
    noisy = np.clip(rows + np.random.default_rng(0).normal(0, 0.1, rows.shape), 0, 1)
    result = monitor.test(noisy)
    assert result.drifted
    assert result.min_p_value < 1e-6
    assert result.n_features_drifted > 10


def test_shifted_images_drift(monitor: DriftMonitor, digits: tuple[np.ndarray, ...]) -> None:
    images = digits[1][:200].reshape(-1, 8, 8)
    shifted = np.roll(images, 2, axis=2).reshape(-1, 64)
    assert monitor.test(shifted).drifted


def test_brighter_rows_drift(monitor: DriftMonitor, digits: tuple[np.ndarray, ...]) -> None:
    assert monitor.test(np.clip(digits[1][:200] + 0.15, 0, 1)).drifted


def test_ink_in_always_blank_pixels_drifts(
    monitor: DriftMonitor, digits: tuple[np.ndarray, ...]
) -> None:
    assert monitor.constant.size > 0
    rows = digits[1][:200].copy()
    rows[:20, monitor.constant[0]] = 0.5
    result = monitor.test(rows)
    assert result.drifted
    assert int(monitor.constant[0]) in result.drifted_features


def test_constant_features_are_not_ks_tested(monitor: DriftMonitor) -> None:
    assert set(monitor.varying).isdisjoint(monitor.constant)
    assert monitor.varying.size + monitor.constant.size == 64


def test_result_arrives_when_a_window_completes(digits: tuple[np.ndarray, ...]) -> None:
    monitor = DriftMonitor(digits[0], window=50, alpha=0.01)
    assert monitor.observe(digits[1][:49]) is None
    result = monitor.observe(digits[1][49])
    assert result is not None
    assert result.window == 50
    assert monitor.observe(digits[1][50:99]) is None


def test_sliding_window_reports_every_k_rows(digits: tuple[np.ndarray, ...]) -> None:
    monitor = DriftMonitor(digits[0], window=50, alpha=0.01, every=10)
    assert monitor.observe(digits[1][:50]) is not None
    assert monitor.observe(digits[1][50:59]) is None
    assert monitor.observe(digits[1][59]) is not None


def test_drift_reported_through_observe(digits: tuple[np.ndarray, ...]) -> None:
    monitor = DriftMonitor(digits[0], window=100, alpha=0.01)
    noisy = np.clip(digits[1][:100] + np.random.default_rng(1).normal(0, 0.1, (100, 64)), 0, 1)
    result = monitor.observe(noisy)
    assert result is not None and result.drifted


def test_bonferroni_is_more_conservative_than_bh(digits: tuple[np.ndarray, ...]) -> None:
    bh = DriftMonitor(digits[0], window=200, alpha=0.05)
    bonferroni = DriftMonitor(digits[0], window=200, alpha=0.05, correction="bonferroni")
    rows = np.clip(digits[1][:200] + 0.03, 0, 1)
    assert bonferroni.test(rows).n_features_drifted <= bh.test(rows).n_features_drifted


def test_benjamini_hochberg_matches_hand_computation() -> None:
    adjusted = benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    assert adjusted == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])


def test_rows_of_the_wrong_width_are_refused(monitor: DriftMonitor) -> None:
    with pytest.raises(MonitorInputError):
        monitor.observe(np.zeros((3, 10)))


def test_non_finite_rows_are_refused(monitor: DriftMonitor) -> None:
    with pytest.raises(MonitorInputError):
        monitor.observe(np.full((1, 64), np.inf))


@pytest.mark.parametrize("kwargs", [{"window": 5}, {"alpha": 0.0}, {"every": 0}])
def test_impossible_configuration_is_refused(
    digits: tuple[np.ndarray, ...], kwargs: dict[str, float]
) -> None:
    with pytest.raises(MonitorConfigError):
        DriftMonitor(digits[0], **kwargs)  # type: ignore[arg-type]
