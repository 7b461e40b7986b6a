"""PRADA-style extraction detection: benign digits pass, synthetic query streams are flagged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from service.monitor import ExtractionDetector, MonitorConfigError, MonitorInputError
from service.monitor.calibration import (
    benign_queries,
    jacobian_queries,
    perturbation_queries,
    uniform_queries,
)


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    return tmp_path / "run" / "monitor.db"


def load_digit_rows() -> np.ndarray:
    """The 1797 digits bundled with scikit-learn, scaled to [0, 1] (read without sklearn)."""
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    return np.loadtxt(path, delimiter=",", dtype=np.float32)[:, :64] / 16.0


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    """A held-out 30% of the digits, as a benign client would send them."""
    x = load_digit_rows()
    order = np.random.default_rng(20261122).permutation(len(x))
    return x[order[int(0.7 * len(x)) :]]


def feed(detector: ExtractionDetector, subject: str, queries: np.ndarray) -> list[bool]:
    return [detector.observe(subject, q).flagged for q in queries]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_benign_digit_queries_are_not_flagged(db_path: Path, pool: np.ndarray, seed: int) -> None:
    detector = ExtractionDetector(db_path)
    flags = feed(detector, "alice", benign_queries(pool, 120, np.random.default_rng(seed)))
    assert not any(flags)
    assert detector.observe("alice", pool[0]).suspicion < 0.5


def test_jacobian_augmentation_queries_are_flagged(db_path: Path, pool: np.ndarray) -> None:
    detector = ExtractionDetector(db_path)
    queries = jacobian_queries(pool, 60, np.random.default_rng(0), seeds=5, eps=0.05)
    flags = feed(detector, "mallory", queries)
    assert flags[-1]
    signal = detector.observe("mallory", queries[-1] + 0.01)
    assert signal.shapiro_w is not None and signal.shapiro_w < detector.delta
    assert signal.suspicion > 0.5


def test_small_perturbations_of_few_seeds_are_flagged(db_path: Path, pool: np.ndarray) -> None:
    detector = ExtractionDetector(db_path)
    queries = perturbation_queries(pool, 60, np.random.default_rng(0))
    assert feed(detector, "mallory", queries)[-1]


def test_uniform_noise_queries_are_flagged(db_path: Path, pool: np.ndarray) -> None:
    detector = ExtractionDetector(db_path)
    queries = uniform_queries(pool, 60, np.random.default_rng(0))
    flags = feed(detector, "mallory", queries)
    assert flags[-1]


def test_nothing_is_flagged_before_min_queries(db_path: Path, pool: np.ndarray) -> None:
    detector = ExtractionDetector(db_path, min_queries=30)
    queries = perturbation_queries(pool, 30, np.random.default_rng(0))
    flags = feed(detector, "mallory", queries)
    assert not any(flags[:30])
    assert detector.observe("mallory", queries[0] + 0.01).flagged


def test_batches_count_like_single_queries(db_path: Path, pool: np.ndarray) -> None:
    detector = ExtractionDetector(db_path)
    signal = detector.observe("mallory", perturbation_queries(pool, 40, np.random.default_rng(0)))
    assert signal.flagged
    assert signal.n_distances == 39


def test_history_is_shared_between_detector_instances(db_path: Path, pool: np.ndarray) -> None:
    queries = perturbation_queries(pool, 40, np.random.default_rng(0))
    first, second = ExtractionDetector(db_path), ExtractionDetector(db_path)
    for i, q in enumerate(queries):
        signal = (first if i % 2 else second).observe("mallory", q)
    assert signal.flagged


def test_subjects_have_separate_histories(db_path: Path, pool: np.ndarray) -> None:
    detector = ExtractionDetector(db_path)
    feed(detector, "mallory", perturbation_queries(pool, 60, np.random.default_rng(0)))
    flags = feed(detector, "alice", benign_queries(pool, 60, np.random.default_rng(1)))
    assert not any(flags)


def test_exact_repeats_add_no_distances(db_path: Path, pool: np.ndarray) -> None:
    detector = ExtractionDetector(db_path)
    for _ in range(50):
        signal = detector.observe("alice", pool[3])
    assert signal.n_distances == 0
    assert not signal.flagged


def test_identical_distances_are_flagged(db_path: Path) -> None:
    detector = ExtractionDetector(db_path)
    grid = np.zeros((40, 64), dtype=np.float32)
    grid[np.arange(40), np.arange(40)] = 1.0
    assert detector.observe("mallory", grid).flagged


def test_labels_restrict_distances_to_the_same_class(db_path: Path, pool: np.ndarray) -> None:
    detector = ExtractionDetector(db_path)
    rows = pool[:2]
    signal = detector.observe("alice", rows, labels=[1, 2])
    assert signal.n_distances == 0


def test_history_is_bounded(db_path: Path, pool: np.ndarray) -> None:
    import sqlite3

    detector = ExtractionDetector(db_path, history=50)
    detector.observe("alice", benign_queries(pool, 120, np.random.default_rng(0)))
    with sqlite3.connect(db_path) as conn:
        (blob,) = conn.execute("SELECT history FROM extraction_state").fetchone()
    assert len(blob) == 50 * 64 * 4


def test_reset_forgets_a_subject(db_path: Path, pool: np.ndarray) -> None:
    detector = ExtractionDetector(db_path)
    detector.observe("mallory", perturbation_queries(pool, 40, np.random.default_rng(0)))
    detector.reset("mallory")
    assert detector.observe("mallory", pool[0]).n_distances == 0


@pytest.mark.parametrize(
    "bad", [np.full((2, 64), np.nan), np.zeros((2, 2, 2)), np.zeros((0, 64)), "digits"]
)
def test_malformed_queries_are_refused(db_path: Path, bad: object) -> None:
    with pytest.raises(MonitorInputError):
        ExtractionDetector(db_path).observe("alice", bad)  # type: ignore[arg-type]


def test_labels_of_wrong_length_are_refused(db_path: Path, pool: np.ndarray) -> None:
    with pytest.raises(MonitorInputError, match="labels"):
        ExtractionDetector(db_path).observe("alice", pool[:3], labels=[1])


@pytest.mark.parametrize("kwargs", [{"delta": 0.0}, {"delta": 1.0}, {"min_queries": 2}])
def test_impossible_configuration_is_refused(db_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(MonitorConfigError):
        ExtractionDetector(db_path, **kwargs)  # type: ignore[arg-type]
