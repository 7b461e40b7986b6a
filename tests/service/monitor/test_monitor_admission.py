"""Admission: the rate-limit token and the flood count of a request in one transaction."""

from __future__ import annotations

import math
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


# -- the bucket and the policy's per-minute limit agree -------------------------------------


def test_request_that_fills_the_limit_is_admitted_and_the_next_is_refused(db_path: Path) -> None:
    limiter, flood = worker(db_path)
    rates = [
        admit(limiter, flood, "frank", rate_per_minute=10, burst=10, now=T0 + i).rate_per_minute
        for i in range(10)
    ]
    assert rates[-1] == 10.0  # exactly the limit: the policy allows it too
    with pytest.raises(RateLimited) as refused:
        # The bucket has refilled tokens by now; the window has no room.
        admit(limiter, flood, "frank", rate_per_minute=10, burst=10, now=T0 + 30)
    # The first counted request (second T0) leaves the window at T0 + 60.
    assert refused.value.retry_after_seconds == pytest.approx(30.0)
    assert admit(limiter, flood, "frank", rate_per_minute=10, burst=10, now=T0 + 60)


def test_full_burst_after_a_pause_never_takes_the_rate_over_the_limit(db_path: Path) -> None:
    # A bucket alone admits its burst plus a minute's refill within one minute: here
    # 30 + 60 = 90 requests, 30 of which the policy (limit 60) would deny with 403.
    limiter, flood = worker(db_path)
    admitted = 0
    for step in range(600):  # one attempt every 0.1 s for a minute
        try:
            signal = admit(
                limiter, flood, "grace", rate_per_minute=60, burst=30, now=T0 + step / 10
            )
        except RateLimited:
            continue
        admitted += 1
        assert signal.rate_per_minute <= 60
    assert admitted == 60


def test_client_waiting_for_retry_after_is_admitted_within_the_limit(db_path: Path) -> None:
    """A client that sleeps for each 429's Retry-After never exceeds the policy's rate."""
    limiter, flood = worker(db_path)
    now, admitted, refusals = T0, [], 0
    while now < T0 + 300:
        try:
            signal = admit(limiter, flood, "heidi", rate_per_minute=60, burst=12, now=now)
        except RateLimited as err:
            refusals += 1
            now += max(1, math.ceil(err.retry_after_seconds))  # as the 429 says
            continue
        assert signal.rate_per_minute <= 60
        admitted.append(now)
        now += 0.05
    assert refusals > 0
    # The policy's measure, recomputed from the admitted times: the requests counted in
    # the whole seconds of the last minute, this one included.
    for t in admitted:
        window = [u for u in admitted if math.floor(t) - 60 < math.floor(u) and u <= t]
        assert len(window) <= 60
    # And the client gets the rate it is allowed: about a minute's worth per minute.
    assert len(admitted) >= 4 * 60
