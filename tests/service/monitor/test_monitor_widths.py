"""Drift and extraction monitoring on unit rows of any width (30 and 64 features)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.monitor import DriftMonitor, ExtractionDetector, MonitorInputError
from service.monitor.calibration import (
    benign_queries,
    calibrate_thresholds,
    jacobian_queries,
    perturbation_queries,
    uniform_queries,
)


def cancer_rows() -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer().data
    return ((x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))).astype(np.float32)


def digit_rows() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)


ROWS = {30: cancer_rows, 64: digit_rows}


@pytest.fixture(params=[30, 64])
def rows(request: pytest.FixtureRequest) -> np.ndarray:
    x = ROWS[request.param]()
    assert x.shape[1] == request.param
    return x[np.random.default_rng(7).permutation(len(x))]


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    return tmp_path / "run" / "monitor.db"


def test_drift_is_quiet_on_held_out_rows_and_loud_on_shifted_ones(rows: np.ndarray) -> None:
    cut = len(rows) // 2
    monitor = DriftMonitor(rows[:cut], window=100, alpha=0.01)
    clean = monitor.test(rows[cut : cut + 100])
    assert not clean.drifted
    assert clean.n_features_tested == rows.shape[1]
    shifted = np.clip(rows[cut : cut + 100] + 0.2, 0.0, 1.0)
    result = monitor.test(shifted)
    assert result.drifted
    assert all(0 <= i < rows.shape[1] for i in result.drifted_features)


def test_drift_refuses_rows_of_another_width(rows: np.ndarray) -> None:
    monitor = DriftMonitor(rows[:200], window=50)
    with pytest.raises(MonitorInputError, match=rf"\(N, {rows.shape[1]}\)"):
        monitor.observe(np.zeros((3, rows.shape[1] + 1)))


def test_extraction_thresholds_from_benign_streams_pass_benign_and_flag_attacks(
    rows: np.ndarray, db_path: Path
) -> None:
    pool, held_out = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    thresholds = calibrate_thresholds(pool)
    assert 0 < thresholds.delta <= 0.85
    assert thresholds.delta < thresholds.benign_min_w
    detector = ExtractionDetector(db_path, delta=thresholds.delta, min_cv=thresholds.min_cv)
    for run in range(3):
        queries = benign_queries(held_out, 120, np.random.default_rng(50 + run))
        assert not any(detector.observe(f"benign-{run}", q).flagged for q in queries)
    for name, stream in (
        ("jacobian", jacobian_queries),
        ("perturb", perturbation_queries),
        ("uniform", uniform_queries),
    ):
        queries = stream(held_out, 150, np.random.default_rng(1))
        assert any(detector.observe(name, q).flagged for q in queries), name


def test_benign_tabular_rows_need_their_own_extraction_threshold() -> None:
    # The digits' delta (0.85) flags benign breast-cancer streams: their nearest-neighbour
    # distances are skewed, so W is lower. The calibrated delta sits below them.
    thresholds = calibrate_thresholds(cancer_rows())
    assert thresholds.benign_min_w < 0.85
    assert thresholds.delta == pytest.approx(thresholds.benign_min_w - 0.05)


def test_an_extraction_history_of_another_width_starts_over(db_path: Path) -> None:
    detector = ExtractionDetector(db_path, min_queries=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        detector.observe("s", rng.uniform(size=64))
    signal = detector.observe("s", rng.uniform(size=30))
    assert signal.n_distances == 0
