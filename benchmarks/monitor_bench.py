"""Cost per call of the monitors, each beside a baseline measured in the same run.

Run ``python -m benchmarks.monitor_bench [--quick]``. The baseline of the database-backed
monitors is an empty ``BEGIN IMMEDIATE``/``COMMIT`` on the same WAL database (the price of
cross-process correctness); the baseline of the drift monitor is appending the row to a
Python list. Figures are medians over repeated rounds in microseconds per call: wall time
and CPU time of this process (on a busy machine the wall time includes waiting for a
core; CPU time is the intrinsic cost).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.monitor.drift import DriftMonitor
from service.monitor.errors import RateLimited
from service.monitor.extraction import ExtractionDetector
from service.monitor.flood import FloodDetector
from service.monitor.ratelimit import RateLimiter
from service.monitor.store import MonitorStore


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


def main(argv: list[str] | None = None) -> None:
    """Print the cost table."""
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per round")
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
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
