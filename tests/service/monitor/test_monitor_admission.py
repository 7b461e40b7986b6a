"""Admission: the rate-limit token and the flood count of a request in one transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.monitor import (
    FloodDetector,
    MonitorStoreError,
    RateLimited,
    RateLimiter,
    admit,
)

T0 = 1_800_000_000.0


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    return tmp_path / "run" / "monitor.db"


def worker(db_path: Path) -> tuple[RateLimiter, FloodDetector]:
    """One worker's monitors (each with its own connections to the shared database)."""
    return RateLimiter(db_path), FloodDetector(db_path, window_seconds=60)


def test_burst_is_admitted_and_counted_then_refused_uncounted(db_path: Path) -> None:
    limiter, flood = worker(db_path)
    rates = [
        admit(limiter, flood, "alice", rate_per_minute=60, burst=3, now=T0).rate_per_minute
        for _ in range(3)
    ]
    assert rates == [1.0, 2.0, 3.0]
    with pytest.raises(RateLimited) as refused:
        admit(limiter, flood, "alice", rate_per_minute=60, burst=3, now=T0)
    assert 0 < refused.value.retry_after_seconds <= 1.0
    # The refused request was not counted: the next admitted one is the fourth.
    assert (
        admit(limiter, flood, "alice", rate_per_minute=60, burst=3, now=T0 + 1).rate_per_minute
        == 4.0
    )


def test_workers_sharing_the_database_admit_one_burst_together(db_path: Path) -> None:
    workers = [worker(db_path), worker(db_path)]
    admitted = 0
    for i in range(20):
        limiter, flood = workers[i % 2]
        try:
            admit(limiter, flood, "bob", rate_per_minute=60, burst=5, now=T0)
            admitted += 1
        except RateLimited:
            pass
    assert admitted == 5
    assert workers[0][1].observe("bob", now=T0).rate_per_minute == 6.0


def test_admission_matches_acquire_then_observe(db_path: Path, tmp_path: Path) -> None:
    limiter, flood = worker(db_path)
    apart = worker(tmp_path / "other" / "monitor.db")
    for step in range(8):
        now = T0 + step * 0.5
        outcomes = []
        for lim, fl in ((limiter, flood), apart):
            try:
                outcomes.append(admit(lim, fl, "carol", rate_per_minute=120, burst=2, now=now))
            except RateLimited as err:
                outcomes.append(round(err.retry_after_seconds, 6))
        assert outcomes[0] == outcomes[1]


def test_old_counts_leave_the_window(db_path: Path) -> None:
    limiter, flood = worker(db_path)
    admit(limiter, flood, "dave", rate_per_minute=600, burst=10, now=T0)
    admit(limiter, flood, "dave", rate_per_minute=600, burst=10, now=T0 + 0.5)
    later = admit(limiter, flood, "dave", rate_per_minute=600, burst=10, now=T0 + 61)
    assert later.rate_per_minute == 1.0


def test_unavailable_database_fails_closed(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    limiter, flood = worker(blocker / "monitor.db")
    with pytest.raises(MonitorStoreError):
        admit(limiter, flood, "eve", rate_per_minute=60, burst=5, now=T0)
