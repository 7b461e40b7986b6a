"""Request-flood detection over a sliding window, per subject and for the whole service.

Every request (admitted or not: call :meth:`FloodDetector.observe` before the rate limiter,
so refused attempts count too) increments a one-second counter for its subject and one
for the whole service in the shared database. The rate is the number of requests in the
last ``window_seconds`` scaled to a minute; a subject above ``subject_threshold`` or the
service above ``global_threshold`` requests per minute is a flood, which the authorization
policy denies (``monitor.flood``) and the policy's per-role limit compares with
``monitor.rate_per_minute``.

The counts live in the shared SQLite database, or with a PostgreSQL store
(:mod:`service.monitor.postgres`) in one table every replica counts in.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from service.monitor.errors import MonitorConfigError
from service.monitor.postgres import PostgresMonitorStore
from service.monitor.store import open_store

SCHEMA = """
CREATE TABLE IF NOT EXISTS flood_counts (
    subject TEXT NOT NULL,
    second INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (subject, second)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flood_counts_second ON flood_counts (second)
"""
GLOBAL = "*"  # subjects are stored as "s:<sub>", so no subject can collide with it
DEFAULT_SUBJECT_THRESHOLD = 1200.0
DEFAULT_GLOBAL_THRESHOLD = 6000.0


@dataclass(frozen=True)
class FloodSignal:
    """The request rates seen over the window and whether they are a flood."""

    rate_per_minute: float
    flood: bool
    global_rate_per_minute: float = 0.0


class FloodDetector:
    """Counts requests per subject and overall over a sliding window.

    Args:
        db_path: The shared SQLite file (default ``$ZTML_HOME/run/monitor.db``) or a
            ``postgresql://`` URL.
        window_seconds: Length of the sliding window (1-second resolution).
        subject_threshold: Requests per minute from one subject that are a flood.
        global_threshold: Requests per minute to the whole service that are a flood.
    """

    def __init__(
        self,
        db_path: Path | str | None = None,
        *,
        window_seconds: int = 60,
        subject_threshold: float = DEFAULT_SUBJECT_THRESHOLD,
        global_threshold: float = DEFAULT_GLOBAL_THRESHOLD,
    ) -> None:
        if window_seconds < 1 or subject_threshold <= 0 or global_threshold <= 0:
            raise MonitorConfigError(
                "The flood window must be at least 1 s and the thresholds positive."
            )
        self.store = open_store(db_path, schema=SCHEMA)
        self.window_seconds = int(window_seconds)
        self.subject_threshold = subject_threshold
        self.global_threshold = global_threshold
        self._pruned = -1

    def observe(self, subject: str, *, now: float | None = None) -> FloodSignal:
        """Count one request from ``subject`` and return the current rates.

        Raises:
            MonitorStoreError: the shared database is unavailable (fail closed).
        """
        if isinstance(self.store, PostgresMonitorStore):
            counts = self.store.count(f"s:{subject}", window_seconds=self.window_seconds, now=now)
            return self.signal(*counts)
        t = time.time() if now is None else now
        with self.store.transaction() as conn:
            return self.count(conn, subject, now=t)

    def signal(self, subject_count: int, global_count: int) -> FloodSignal:
        """Turn the requests counted in the window into rates and the flood verdict."""
        scale = 60.0 / self.window_seconds
        rate = subject_count * scale
        total = global_count * scale
        return FloodSignal(
            rate_per_minute=rate,
            flood=rate > self.subject_threshold or total > self.global_threshold,
            global_rate_per_minute=total,
        )

    def count(self, conn: sqlite3.Connection, subject: str, *, now: float) -> FloodSignal:
        """Count one request inside the caller's ``BEGIN IMMEDIATE`` transaction on ``conn``.

        Counts older than the window are deleted at most once per second per process
        (the rates never include them either way).
        """
        second = math.floor(now)
        oldest = second - self.window_seconds
        key = f"s:{subject}"
        conn.executemany(
            "INSERT INTO flood_counts (subject, second, n) VALUES (?, ?, 1) "
            "ON CONFLICT(subject, second) DO UPDATE SET n = n + 1",
            [(key, second), (GLOBAL, second)],
        )
        if second != self._pruned:
            conn.execute("DELETE FROM flood_counts WHERE second <= ?", (oldest,))
            self._pruned = second
        counts = dict(
            conn.execute(
                "SELECT subject, SUM(n) FROM flood_counts WHERE subject IN (?, ?) "
                "AND second > ? GROUP BY subject",
                (key, GLOBAL, oldest),
            ).fetchall()
        )
        return self.signal(counts.get(key, 0), counts.get(GLOBAL, 0))

    def room(
        self, conn: sqlite3.Connection, subject: str, *, limit_per_minute: float, now: float
    ) -> float | None:
        """Say whether one more request from ``subject`` keeps its rate within a limit.

        The rate is the one :meth:`count` would report with the request counted, so a
        request admitted here is never over ``limit_per_minute`` by that measure (the
        authorization policy's ``monitor.rate_per_minute``). Reads only; call it inside
        the caller's transaction on ``conn``, before counting.

        Returns:
            None when the request fits, else the seconds until enough of the subject's
            counted requests have left the window for it to fit (assuming no others).
        """
        oldest = math.floor(now) - self.window_seconds
        key = f"s:{subject}"
        (total,) = conn.execute(
            "SELECT COALESCE(SUM(n), 0) FROM flood_counts WHERE subject = ? AND second > ?",
            (key, oldest),
        ).fetchone()
        scale = 60.0 / self.window_seconds
        if (total + 1) * scale <= limit_per_minute:
            return None
        rows = conn.execute(
            "SELECT second, n FROM flood_counts WHERE subject = ? AND second > ? ORDER BY second",
            (key, oldest),
        ).fetchall()
        for second, n in rows:
            total -= n
            if (total + 1) * scale <= limit_per_minute:
                # The count of `second` is in the window while floor(t) < second + window.
                return float(second + self.window_seconds) - now
        return float(self.window_seconds)  # the limit admits nothing (below one request)

    def close(self) -> None:
        """Close this process's connection to the store."""
        self.store.close()
