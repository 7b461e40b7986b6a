"""Token buckets: limits hold per subject, and across real worker processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from service.monitor import MonitorConfigError, RateLimited, RateLimiter

T0 = 1_800_000_000.0


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    return tmp_path / "run" / "monitor.db"


def admitted(limiter: RateLimiter, subject: str, n: int, *, now: float, **limits: float) -> int:
    count = 0
    for _ in range(n):
        try:
            limiter.acquire(subject, now=now, **limits)  # type: ignore[arg-type]
            count += 1
        except RateLimited:
            pass
    return count


def test_burst_is_admitted_then_refused(db_path: Path) -> None:
    limiter = RateLimiter(db_path)
    assert admitted(limiter, "alice", 10, now=T0, rate_per_minute=60, burst=5) == 5


def test_refusal_says_when_to_retry(db_path: Path) -> None:
    limiter = RateLimiter(db_path)
    admitted(limiter, "alice", 3, now=T0, rate_per_minute=30, burst=3)
    with pytest.raises(RateLimited) as info:
        limiter.acquire("alice", rate_per_minute=30, burst=3, now=T0 + 0.5)
    assert info.value.retry_after_seconds == pytest.approx(1.5)
    assert info.value.retry_after_header() == "2"


def test_bucket_refills_at_the_rate(db_path: Path) -> None:
    limiter = RateLimiter(db_path)
    admitted(limiter, "alice", 5, now=T0, rate_per_minute=60, burst=5)
    assert admitted(limiter, "alice", 10, now=T0 + 3.0, rate_per_minute=60, burst=5) == 3


def test_refill_never_exceeds_the_burst(db_path: Path) -> None:
    limiter = RateLimiter(db_path)
    admitted(limiter, "alice", 1, now=T0, rate_per_minute=60, burst=4)
    assert admitted(limiter, "alice", 10, now=T0 + 3600, rate_per_minute=60, burst=4) == 4


def test_subjects_have_separate_buckets(db_path: Path) -> None:
    limiter = RateLimiter(db_path)
    admitted(limiter, "alice", 5, now=T0, rate_per_minute=60, burst=2)
    assert admitted(limiter, "bob", 5, now=T0, rate_per_minute=60, burst=2) == 2


def test_smaller_burst_caps_saved_tokens(db_path: Path) -> None:
    limiter = RateLimiter(db_path)
    admitted(limiter, "alice", 1, now=T0, rate_per_minute=600, burst=100)
    assert admitted(limiter, "alice", 50, now=T0, rate_per_minute=600, burst=3) == 3


def test_zero_rate_refuses_everything(db_path: Path) -> None:
    with pytest.raises(RateLimited):
        RateLimiter(db_path).acquire("alice", rate_per_minute=0, burst=5)


@pytest.mark.parametrize(("rate", "burst"), [(-1, 5), (60, 0)])
def test_impossible_limits_are_refused(db_path: Path, rate: float, burst: int) -> None:
    with pytest.raises(MonitorConfigError):
        RateLimiter(db_path).acquire("alice", rate_per_minute=rate, burst=burst)


def test_clock_going_backwards_does_not_add_tokens(db_path: Path) -> None:
    limiter = RateLimiter(db_path)
    admitted(limiter, "alice", 2, now=T0, rate_per_minute=60, burst=2)
    assert admitted(limiter, "alice", 5, now=T0 - 100, rate_per_minute=60, burst=2) == 0


def test_state_is_shared_between_limiter_instances(db_path: Path) -> None:
    first, second = RateLimiter(db_path), RateLimiter(db_path)
    admitted(first, "alice", 3, now=T0, rate_per_minute=60, burst=4)
    assert admitted(second, "alice", 3, now=T0, rate_per_minute=60, burst=4) == 1


def test_database_is_private(db_path: Path) -> None:
    RateLimiter(db_path).acquire("alice", rate_per_minute=60, burst=1)
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700


WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from service.monitor import RateLimited, RateLimiter

    db, go, burst = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    limiter = RateLimiter(db)
    limiter.acquire("warmup-" + str(os.getpid()), rate_per_minute=60, burst=1)
    Path(f"{go}.ready.{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.001)
    ok = calls = refused_in_a_row = 0
    start = time.perf_counter()
    while refused_in_a_row < 200:
        calls += 1
        try:
            limiter.acquire("shared", rate_per_minute=6, burst=burst)
            ok += 1
            refused_in_a_row = 0
        except RateLimited:
            refused_in_a_row += 1
    print(ok, (time.perf_counter() - start) / calls)
    """
)


@pytest.mark.slow
def test_processes_hammering_one_subject_admit_one_bucket(db_path: Path, tmp_path: Path) -> None:
    db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    go = tmp_path / "go"
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db_path), str(go), "2000"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready.*"))) < len(workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = [w.communicate(timeout=120)[0].split() for w in workers]
    assert all(w.returncode == 0 for w in workers)
    counts = [int(r[0]) for r in results]
    # 2000 tokens of burst; at 6/min at most one more token refills during the run. With
    # a bucket per process the two would admit 4000 between them. How the 2000 split
    # between the processes depends on the scheduler (one may take them all).
    assert 2000 <= sum(counts) <= 2001, counts
    print("admitted per process", counts, "seconds per call", [float(r[1]) for r in results])


def test_default_burst_is_ten_seconds_of_rate() -> None:
    from service.monitor import burst_for

    assert burst_for(120) == 20
    assert burst_for(1) == 1
