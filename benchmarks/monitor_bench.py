"""Cost per call of the monitors, each beside a baseline measured in the same run.

Run ``python -m benchmarks.monitor_bench [--quick]``. The baseline of the database-backed
monitors is an empty ``BEGIN IMMEDIATE``/``COMMIT`` on the same WAL database (the price of
cross-process correctness); the baseline of the drift monitor is appending the row to a
Python list. Figures are medians over repeated rounds in microseconds per call: wall time
and CPU time of this process (on a busy machine the wall time includes waiting for a
core; CPU time is the intrinsic cost).

A second table gives the latency a request pays for the shared store of a scaled-out
service (``ZTML_MONITOR_URL``, PostgreSQL over loopback TCP, a server started for the
run or ``--postgres URL``) beside the SQLite default, per call, p50 and p99 of single
calls: the admission (token, window, flood count), the extraction history update, both
together (what every request pays), and queueing a flagged request for review.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.monitor.admission import admit
from service.monitor.drift import DriftMonitor
from service.monitor.errors import RateLimited
from service.monitor.extraction import ExtractionDetector
from service.monitor.flood import FloodDetector
from service.monitor.ratelimit import RateLimiter
from service.monitor.store import MonitorStore
from service.review import ReviewQueue


def per_call_us(fn: Callable[[int], object], calls: int, rounds: int) -> tuple[float, float]:
    """Median over ``rounds`` of the wall and CPU microseconds per call of ``fn(i)``."""
    wall, cpu = [], []
    for r in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for i in range(calls):
            fn(r * calls + i)
        wall.append((time.perf_counter() - start) / calls * 1e6)
        cpu.append((time.process_time() - start_cpu) / calls * 1e6)
    return statistics.median(wall), statistics.median(cpu)


def latencies_us(fn: Callable[[int], object], calls: int) -> list[float]:
    """The wall microseconds of each of ``calls`` calls of ``fn(i)``, after 50 warm-up calls."""
    for i in range(50):
        fn(-1 - i)
    out = []
    for i in range(calls):
        start = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def request_path(location: Path | str, queries: np.ndarray) -> dict[str, Callable[[int], object]]:
    """The store work of one request on ``location``: each step, and all of it together."""
    limiter, flood = RateLimiter(location), FloodDetector(location)
    extraction = ExtractionDetector(location)
    extraction.observe("warm", queries[:200])  # a full 200-query history
    review = ReviewQueue(location)
    flagged = queries[:4]

    def admission(i: int) -> None:
        with contextlib.suppress(RateLimited):
            admit(limiter, flood, f"s{i % 50}", rate_per_minute=1e6, burst=1000)

    def history(i: int) -> None:
        extraction.observe("warm", queries[i % len(queries)])

    def both(i: int) -> None:
        admission(i)
        history(i)

    def queue(i: int) -> None:
        review.add(
            request_id=f"r{i}",
            subject="alice",
            tenant="demo",
            model_digest=None,
            reasons=["bench"],
            suspicion=0.9,
            input_digest=None,
            instances=flagged,
        )

    return {
        "admission (token + window + flood count)": admission,
        "extraction history (200 queries, 1 new)": history,
        "per request: admission + extraction": both,
        "review queue add (flagged requests only)": queue,
    }


def shared_store_table(calls: int, postgres: str | None, tmp: Path, queries: np.ndarray) -> Any:
    """The shared store's latency per call beside SQLite's, in one table."""
    from rich.table import Table

    from service.toolchain.postgres import fresh_database, postgres_server

    with contextlib.ExitStack() as stack:
        server = postgres or stack.enter_context(postgres_server())
        url = fresh_database(server, "bench_monitor")
        local = request_path(tmp / "shared-bench.db", queries)
        shared = request_path(url, queries)
        rows = []
        for name in local:
            base = latencies_us(local[name], calls)
            got = latencies_us(shared[name], calls)
            rows.append((name, base, got))
    table = Table(
        title=f"shared store (PostgreSQL) vs SQLite: µs per call, {calls} calls each",
        caption="PostgreSQL over loopback TCP, one connection per store; SQLite: the default file",
    )
    for column in (
        "operation",
        "SQLite p50",
        "SQLite p99",
        "PostgreSQL p50",
        "PostgreSQL p99",
        "added p50",
        "ratio p50",
        "ratio p99",
    ):
        table.add_column(column, justify="right")
    for name, base, got in rows:
        b50, b99, g50, g99 = (
            percentile(base, 50),
            percentile(base, 99),
            percentile(got, 50),
            percentile(got, 99),
        )
        table.add_row(
            name,
            f"{b50:.0f}",
            f"{b99:.0f}",
            f"{g50:.0f}",
            f"{g99:.0f}",
            f"{g50 - b50:+.0f}",
            f"{g50 / b50:.1f}x",
            f"{g99 / b99:.1f}x",
        )
    return table


def main(argv: list[str] | None = None) -> None:
    """Print the cost table and the shared store's table."""
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per round")
    parser.add_argument(
        "--postgres", help="a postgresql:// server to measure (default: one started for the run)"
    )
    parser.add_argument(
        "--no-shared", action="store_true", help="skip the shared store (no PostgreSQL)"
    )
    args = parser.parse_args(argv)
    calls, rounds = (200, 3) if args.quick else (2000, 5)
    rng = np.random.default_rng(0)
    queries = rng.uniform(0, 1, (calls * rounds + 1, 64)).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "monitor.db"
        empty = MonitorStore(db, schema="CREATE TABLE IF NOT EXISTS bench (v INTEGER)")

        def empty_transaction(_: int) -> None:
            with empty.transaction():
                pass

        limiter = RateLimiter(db)

        def acquire(i: int) -> None:
            with contextlib.suppress(RateLimited):
                limiter.acquire(f"s{i % 50}", rate_per_minute=600, burst=20)

        flood = FloodDetector(db)
        extraction = ExtractionDetector(db)
        extraction.observe("warm", queries[:200])
        drift = DriftMonitor(rng.uniform(0, 1, (1000, 64)), window=200)
        sink: list[np.ndarray] = []

        baseline = per_call_us(empty_transaction, calls, rounds)
        rows = [
            ("RateLimiter.acquire", per_call_us(acquire, calls, rounds), baseline),
            (
                "FloodDetector.observe",
                per_call_us(lambda i: flood.observe(f"s{i % 50}"), calls, rounds),
                baseline,
            ),
            (
                "ExtractionDetector.observe (200-query history)",
                per_call_us(lambda i: extraction.observe("warm", queries[i]), calls, rounds),
                baseline,
            ),
            (
                "DriftMonitor.observe (window 200, amortised)",
                per_call_us(lambda i: drift.observe(queries[i]), calls, rounds),
                per_call_us(lambda i: sink.append(queries[i]), calls, rounds),
            ),
        ]
    table = Table(title=f"monitor cost per call ({calls} calls x {rounds} rounds, median)")
    for column in ("operation", "wall µs", "CPU µs", "baseline wall µs", "baseline CPU µs"):
        table.add_column(column, justify="right")
    table.add_column("ratio (CPU)", justify="right")
    for name, (wall, cpu), (base_wall, base_cpu) in rows:
        table.add_row(
            name,
            f"{wall:.1f}",
            f"{cpu:.1f}",
            f"{base_wall:.1f}",
            f"{base_cpu:.1f}",
            f"{cpu / base_cpu:.1f}x" if base_cpu > 0 else "-",
        )
    table.caption = (
        "baseline: empty BEGIN IMMEDIATE/COMMIT on the same WAL database "
        "(drift: appending the row to a list)"
    )
    console = Console(width=140)
    console.print(table)
    if not args.no_shared:
        with tempfile.TemporaryDirectory() as tmp:
            shared_calls = 500 if args.quick else 5000
            console.print(shared_store_table(shared_calls, args.postgres, Path(tmp), queries))


if __name__ == "__main__":
    main()
