"""The monitors on a real PostgreSQL store: the SQLite rules, across processes, failing closed."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from service.monitor import (
    ExtractionDetector,
    FloodDetector,
    FloodSignal,
    MonitorConfigError,
    MonitorStoreError,
    RateLimited,
    RateLimiter,
    admit,
)
from service.monitor.postgres import HISTORY_ATTEMPTS, PostgresMonitorStore
from service.toolchain.postgres import LocalPostgres, fresh_database, local_postgres

pytestmark = [pytest.mark.system, pytest.mark.postgres]
T0 = 1_800_000_000.0


@pytest.fixture
def url(postgres_url: str, request: pytest.FixtureRequest) -> str:
    """An empty database of the session's server, named after the test."""
    name = "m_" + request.node.name.lower().translate(str.maketrans("[]-.", "____"))[:50]
    return fresh_database(postgres_url, name)


def outcome(limiter: RateLimiter, flood: FloodDetector, subject: str, **kwargs: float) -> object:
    try:
        return admit(limiter, flood, subject, **kwargs)  # type: ignore[arg-type]
    except RateLimited as err:
        return round(err.retry_after_seconds, 6)


def test_postgres_url_selects_the_shared_store(url: str) -> None:
    assert isinstance(RateLimiter(url).store, PostgresMonitorStore)
    assert isinstance(FloodDetector(url).store, PostgresMonitorStore)
    assert isinstance(ExtractionDetector(url).store, PostgresMonitorStore)


def test_other_urls_are_refused() -> None:
    with pytest.raises(MonitorConfigError, match="not supported"):
        RateLimiter("redis://127.0.0.1:6379/0")


def test_admission_decides_as_on_sqlite(url: str, tmp_path: Path) -> None:
    """A random sequence of requests gets the same answers from both stores."""
    shared = (RateLimiter(url), FloodDetector(url, window_seconds=10))
    local = (RateLimiter(tmp_path / "m.db"), FloodDetector(tmp_path / "m.db", window_seconds=10))
    rng = random.Random(7)
    now = T0
    for _ in range(300):
        now += rng.choice((0.0, 0.05, 0.3, 1.0, 4.0))
        subject = rng.choice(("alice", "bob"))
        limits = {"rate_per_minute": rng.choice((30.0, 60.0, 120.0)), "burst": rng.choice((2, 5))}
        got = outcome(*shared, subject, now=now, **limits)
        expected = outcome(*local, subject, now=now, **limits)
        assert got == expected, (now, subject, limits)


def test_bucket_alone_decides_as_on_sqlite(url: str, tmp_path: Path) -> None:
    shared, local = RateLimiter(url), RateLimiter(tmp_path / "m.db")
    answers: list[list[object]] = [[], []]
    for step in range(40):
        for limiter, seen in ((shared, answers[0]), (local, answers[1])):
            try:
                limiter.acquire("carol", rate_per_minute=60, burst=4, now=T0 + step * 0.25)
                seen.append(True)
            except RateLimited as err:
                seen.append(round(err.retry_after_seconds, 6))
    assert answers[0] == answers[1]
    assert shared.tokens("carol") == pytest.approx(local.tokens("carol"))


def test_flood_counts_decide_as_on_sqlite(url: str, tmp_path: Path) -> None:
    shared = FloodDetector(url, window_seconds=10, subject_threshold=60, global_threshold=90)
    local = FloodDetector(
        tmp_path / "m.db", window_seconds=10, subject_threshold=60, global_threshold=90
    )
    for i in range(40):
        subject = ("dave", "erin")[i % 2]
        now = T0 + i * 0.4
        assert shared.observe(subject, now=now) == local.observe(subject, now=now)


def test_extraction_history_is_the_same_as_on_sqlite(url: str, tmp_path: Path) -> None:
    shared, local = ExtractionDetector(url), ExtractionDetector(tmp_path / "m.db")
    rng = np.random.default_rng(3)
    seeds = rng.uniform(0, 1, (3, 64))
    for i in range(60):
        x = np.clip(seeds[i % 3] + rng.normal(0, 0.01, (2, 64)), 0, 1)
        labels = [i % 3, i % 3]
        assert shared.observe("frank", x, labels=labels) == local.observe("frank", x, labels=labels)
    shared.reset("frank")
    assert shared.observe("frank", seeds[0]).n_distances == 0


def _stored_queries(url: str, subject: str) -> int | None:
    """How many queries the shared store holds for ``subject`` (None: no row)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT n_queries FROM ztml_monitor_extraction WHERE subject = %s", (subject,)
        ).fetchone()
    return None if row is None else int(row[0])


def test_history_written_meanwhile_by_another_replica_is_kept(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = ExtractionDetector(url), ExtractionDetector(url)
    mine.observe("judy", np.zeros(64))
    advance, attempts = mine._advance, []

    def overtaken(*args: object) -> object:
        if not attempts:  # another replica writes between this one's read and write
            other.observe("judy", np.full(64, 0.5))
        attempts.append(1)
        return advance(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(mine, "_advance", overtaken)
    signal = mine.observe("judy", np.ones(64))
    assert len(attempts) == 2  # the first write was refused, the second built on the newer
    assert signal.n_distances == 2
    assert _stored_queries(url, "judy") == 3


def test_a_replica_that_always_writes_first_cannot_starve_an_update(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = ExtractionDetector(url)
    mine.observe("ivan", np.zeros(64))
    advance, outcomes = mine._advance, []

    def overtaken(*args: object) -> object:
        # Before every write of this replica another one bumps the subject's version,
        # unless this replica holds the row's lock.
        with psycopg.connect(url, autocommit=True) as rival:
            rival.execute("SET lock_timeout = '100ms'")
            try:
                rival.execute(
                    "UPDATE ztml_monitor_extraction SET version = "
                    "nextval('ztml_monitor_version') WHERE subject = 'ivan'"
                )
                outcomes.append("overtook")
            except psycopg.errors.LockNotAvailable:
                outcomes.append("waited")
        return advance(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(mine, "_advance", overtaken)
    signal = mine.observe("ivan", np.ones(64))
    assert outcomes == ["overtook"] * HISTORY_ATTEMPTS + ["waited"]
    assert signal.n_distances == 1
    assert _stored_queries(url, "ivan") == 2


def test_zero_rate_refuses_without_asking_the_store() -> None:
    unreachable = RateLimiter("postgresql://nobody@127.0.0.1:9/none")
    with pytest.raises(RateLimited):
        unreachable.acquire("alice", rate_per_minute=0, burst=5)


def test_libpq_service_file_names_the_store(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pods' form: ``postgresql://?service=ztml`` with the host and user in a file."""
    db = fresh_database(postgres_url, "m_service_file")
    info = psycopg.conninfo.conninfo_to_dict(db)
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(
        f"[ztml]\nhost={info['host']}\nport={info['port']}\ndbname={info['dbname']}\n"
        f"user={info['user']}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(service_file))
    limiter = RateLimiter("postgresql://?service=ztml")
    limiter.acquire("alice", rate_per_minute=60, burst=2)
    assert RateLimiter(db).tokens("alice") == pytest.approx(1.0, abs=0.1)


# -- one limit across processes --------------------------------------------------------------


SUBJECTS = 20  # each subject's limit is reached once: 20 chances for a race to show


def _hammer(url: str, start_at: float, mode: str) -> list[int]:
    """Send requests for one subject after another, each until 30 in a row are refused.

    Returns the requests admitted per subject.
    """
    limiter, flood = RateLimiter(url), FloodDetector(url)
    limiter.store.ready()
    while time.time() < start_at:
        time.sleep(0.001)
    counts = []
    for n in range(SUBJECTS if mode == "admit" else 1):
        admitted = refused_in_a_row = 0
        while refused_in_a_row < 30:
            try:
                if mode == "admit":
                    admit(limiter, flood, f"shared-{n}", rate_per_minute=20, burst=20)
                else:
                    limiter.acquire("shared", rate_per_minute=6, burst=400)
                admitted += 1
                refused_in_a_row = 0
            except RateLimited:
                refused_in_a_row += 1
        counts.append(admitted)
    limiter.close()
    return counts


def _processes_hammer(url: str, mode: str, processes: int = 4) -> tuple[list[int], float]:
    """Admitted requests per subject, summed over the processes, and the seconds it took."""
    start_at = time.time() + 3.0  # every process connected by then
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = pool.starmap(_hammer, [(url, start_at, mode)] * processes)
    return [sum(column) for column in zip(*results, strict=True)], time.time() - start_at


@pytest.mark.slow
def test_processes_hammering_one_subject_share_one_window(url: str) -> None:
    per_subject, _ = _processes_hammer(url, "admit")
    # The window admits 20 per minute and subject; the run is far shorter than the minute.
    # With a store per process, the four would admit 80 per subject between them; with a
    # read-modify-write race, now and then 21 or more.
    assert per_subject == [20] * SUBJECTS, per_subject
    # Every admitted request was counted once (plus this one).
    assert FloodDetector(url).observe("shared-0").rate_per_minute == 21


@pytest.mark.slow
def test_processes_hammering_one_subject_share_one_bucket(url: str) -> None:
    (admitted,), elapsed = _processes_hammer(url, "acquire")
    refill = elapsed * 6 / 60  # at 6 per minute
    assert 400 <= admitted <= 400 + refill + 1, (admitted, elapsed)


def _observe_many(url: str, start_at: float, worker: int) -> None:
    detector = ExtractionDetector(url, history=1000)
    detector.store.ready()
    while time.time() < start_at:
        time.sleep(0.001)
    rng = np.random.default_rng(worker)
    for _ in range(40):
        detector.observe("prada", rng.uniform(0, 1, (1, 64)))


@pytest.mark.slow
def test_processes_adding_to_one_history_lose_no_query(url: str) -> None:
    start_at = time.time() + 3.0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.starmap(_observe_many, [(url, start_at, w) for w in range(4)])
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT n_queries, length(history) FROM ztml_monitor_extraction WHERE subject = 'prada'"
        ).fetchone()
    assert row == (160, 160 * 64 * 4)


def test_threads_with_their_own_connections_share_one_window(url: str) -> None:
    results: list[list[int]] = []
    start_at = time.time() + 1.0

    def run() -> None:
        results.append(_hammer(url, start_at, "admit"))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [sum(column) for column in zip(*results, strict=True)] == [20] * SUBJECTS


def _admit_in_child(limiter: RateLimiter, flood: FloodDetector) -> None:
    inherited = limiter.store._pg._conn  # type: ignore[union-attr]
    admit(limiter, flood, "kate", rate_per_minute=600, burst=50)
    if limiter.store._pg._conn is inherited:  # type: ignore[union-attr]
        raise SystemExit(3)  # wrote through the parent's connection


def test_a_store_inherited_by_a_forked_worker_opens_its_own_connection(url: str) -> None:
    limiter, flood = RateLimiter(url), FloodDetector(url)
    admit(limiter, flood, "kate", rate_per_minute=600, burst=50)
    child = multiprocessing.get_context("fork").Process(
        target=_admit_in_child, args=(limiter, flood)
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    # The parent's session is untouched: it goes on with the count of all three.
    assert admit(limiter, flood, "kate", rate_per_minute=600, burst=50).rate_per_minute == 3.0


# -- failing closed and recovering --------------------------------------------------------------


@pytest.fixture
def restartable() -> Iterator[LocalPostgres]:
    with local_postgres(database="monitor") as server:
        yield server


def test_store_outage_fails_closed_and_recovers_without_a_new_store(
    restartable: LocalPostgres,
) -> None:
    limiter, flood = RateLimiter(restartable.url), FloodDetector(restartable.url)
    extraction = ExtractionDetector(restartable.url)
    assert isinstance(admit(limiter, flood, "gina", rate_per_minute=600, burst=50), FloodSignal)
    extraction.observe("gina", np.zeros(64))
    restartable.stop()
    with pytest.raises(MonitorStoreError, match="unavailable"):
        admit(limiter, flood, "gina", rate_per_minute=600, burst=50)
    with pytest.raises(MonitorStoreError):
        extraction.observe("gina", np.ones(64))
    restartable.start()
    signal = admit(limiter, flood, "gina", rate_per_minute=600, burst=50)
    assert signal.rate_per_minute == 2.0  # the state from before the outage is kept
    assert extraction.observe("gina", np.ones(64)).n_distances == 1


def test_a_restarted_server_costs_no_request(restartable: LocalPostgres) -> None:
    """A connection the server dropped is replaced before the request fails."""
    limiter, flood = RateLimiter(restartable.url), FloodDetector(restartable.url)
    admit(limiter, flood, "hank", rate_per_minute=600, burst=50)
    restartable.stop()
    restartable.start()
    assert admit(limiter, flood, "hank", rate_per_minute=600, burst=50).rate_per_minute == 2.0


def test_unreachable_store_fails_closed_without_the_password() -> None:
    limiter = RateLimiter("postgresql://ztml:hunter2@127.0.0.1:9/ztml")
    flood = FloodDetector("postgresql://ztml:hunter2@127.0.0.1:9/ztml")
    with pytest.raises(MonitorStoreError) as caught:
        admit(limiter, flood, "ivan", rate_per_minute=60, burst=5)
    assert "hunter2" not in str(caught.value)
