"""Flood detection over a sliding window, per subject and overall."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.monitor import FloodDetector, MonitorConfigError

T0 = 1_800_000_000.0


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    return tmp_path / "run" / "monitor.db"


def test_rate_counts_requests_in_the_window(db_path: Path) -> None:
    detector = FloodDetector(db_path, window_seconds=60)
    for i in range(12):
        signal = detector.observe("alice", now=T0 + i)
    assert signal.rate_per_minute == 12
    assert not signal.flood


def test_subject_above_threshold_is_a_flood(db_path: Path) -> None:
    detector = FloodDetector(db_path, window_seconds=10, subject_threshold=60)
    signals = [detector.observe("alice", now=T0 + i * 0.1) for i in range(11)]
    # 10 requests in 10 s are 60/min (not above); the 11th crosses it.
    assert not signals[9].flood
    assert signals[10].flood
    assert signals[10].rate_per_minute == pytest.approx(66)


def test_old_requests_leave_the_window(db_path: Path) -> None:
    detector = FloodDetector(db_path, window_seconds=10, subject_threshold=60)
    for i in range(20):
        detector.observe("alice", now=T0 + i * 0.1)
    later = detector.observe("alice", now=T0 + 15)
    assert later.rate_per_minute == 6
    assert not later.flood


def test_flood_of_one_subject_does_not_flag_another(db_path: Path) -> None:
    detector = FloodDetector(db_path, window_seconds=10, subject_threshold=60)
    for i in range(30):
        detector.observe("mallory", now=T0 + i * 0.01)
    signal = detector.observe("alice", now=T0 + 1)
    assert signal.rate_per_minute == 6
    assert not signal.flood
    assert signal.global_rate_per_minute == 6 * 31


def test_service_wide_flood_flags_every_subject(db_path: Path) -> None:
    detector = FloodDetector(db_path, window_seconds=10, global_threshold=120)
    for i in range(25):
        detector.observe(f"bot-{i}", now=T0 + i * 0.01)
    signal = detector.observe("alice", now=T0 + 1)
    assert signal.flood
    assert signal.rate_per_minute == 6


def test_counts_are_shared_between_detector_instances(db_path: Path) -> None:
    first, second = FloodDetector(db_path), FloodDetector(db_path)
    for i in range(5):
        first.observe("alice", now=T0 + i)
    assert second.observe("alice", now=T0 + 5).rate_per_minute == 6


def test_subject_named_like_the_global_key_is_separate(db_path: Path) -> None:
    detector = FloodDetector(db_path, window_seconds=60)
    detector.observe("alice", now=T0)
    assert detector.observe("*", now=T0).rate_per_minute == 1


@pytest.mark.parametrize(
    "kwargs", [{"window_seconds": 0}, {"subject_threshold": 0}, {"global_threshold": -1}]
)
def test_impossible_configuration_is_refused(db_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(MonitorConfigError):
        FloodDetector(db_path, **kwargs)  # type: ignore[arg-type]
