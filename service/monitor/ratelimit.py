"""Per-subject token-bucket rate limits shared by all worker processes.

Each subject has a bucket of at most ``burst`` tokens that refills at
``rate_per_minute / 60`` tokens per second; a request takes one token or is refused with
:class:`~service.monitor.errors.RateLimited` carrying the time until the next token. The
limits come with each call (the authorization policy's ``rate_limit_per_minute``
obligation, or configuration), so a subject whose roles change gets its new limit at once;
a smaller burst caps the tokens already saved.

A bucket alone can admit ``burst`` requests on top of a minute's refill within one
minute; :func:`~service.monitor.admission.admit` also keeps the counted rate within the
limit, which is what the authorization policy checks.

The buckets live in the shared SQLite database and each decision is one ``BEGIN
IMMEDIATE`` transaction, so N workers together admit exactly what one bucket allows; with
a PostgreSQL store (:mod:`service.monitor.postgres`) each decision is one call of a
function that holds the subject's row lock, so N replicas do too.
"""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

from service.monitor.errors import MonitorConfigError, RateLimited
from service.monitor.postgres import PostgresMonitorStore
from service.monitor.store import open_store

SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_buckets (
    subject TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated REAL NOT NULL,
    full_at REAL NOT NULL
) WITHOUT ROWID
"""
PRUNE_EVERY = 1000
BURST_SECONDS = 10.0


def burst_for(rate_per_minute: float, *, seconds: float = BURST_SECONDS) -> int:
    """Return a burst worth ``seconds`` of the rate (at least 1 request)."""
    return max(1, math.ceil(rate_per_minute * seconds / 60.0))


def check_limits(rate_per_minute: float, burst: int) -> None:
    """Refuse impossible limits, and every request at a rate of 0.

    Raises:
        RateLimited: the rate is 0 (nothing is admitted).
        MonitorConfigError: the rate is negative or the burst is below 1.
    """
    if rate_per_minute < 0 or burst < 1:
        raise MonitorConfigError(
            f"Rate limit {rate_per_minute}/min with burst {burst} is invalid; the rate "
            "must be >= 0 and the burst >= 1."
        )
    if rate_per_minute == 0:
        raise RateLimited(60.0)


class RateLimiter:
    """Token buckets per subject in the shared monitor store.

    Args:
        db_path: The SQLite file (default ``$ZTML_HOME/run/monitor.db``) or a
            ``postgresql://`` URL.
    """

    def __init__(self, db_path: Path | str | None = None) -> None:
        self.store = open_store(db_path, schema=SCHEMA)
        self._calls = 0

    def acquire(
        self,
        subject: str,
        *,
        rate_per_minute: float,
        burst: int,
        now: float | None = None,
    ) -> None:
        """Take one token from ``subject``'s bucket or refuse the request.

        Args:
            subject: Who the request is charged to (the token's ``sub``, tenant-qualified
                if subjects may collide across tenants).
            rate_per_minute: Sustained rate; ``0`` refuses everything.
            burst: Bucket size: how many requests may arrive at once after a pause.
            now: The current Unix time (default: ``time.time()``); for tests.

        Raises:
            RateLimited: the bucket is empty; ``retry_after_seconds`` says when a token
                will be available.
            MonitorConfigError: the rate is negative or the burst is below 1.
            MonitorStoreError: the shared database is unavailable (fail closed).
        """
        if isinstance(self.store, PostgresMonitorStore):
            check_limits(rate_per_minute, burst)
            decided = self.store.admit(
                subject, rate_per_minute=rate_per_minute, burst=burst, window_seconds=None, now=now
            )
            if not decided.admitted:
                raise RateLimited(decided.wait)
            return
        t = time.time() if now is None else now
        with self.store.transaction() as conn:
            tokens = self.take(conn, subject, rate_per_minute=rate_per_minute, burst=burst, now=t)
        if tokens is not None:
            raise RateLimited((1.0 - tokens) / (rate_per_minute / 60.0))

    def take(
        self,
        conn: sqlite3.Connection,
        subject: str,
        *,
        rate_per_minute: float,
        burst: int,
        now: float,
    ) -> float | None:
        """Take one token inside the caller's ``BEGIN IMMEDIATE`` transaction on ``conn``.

        Returns:
            None when the request is admitted, else the tokens left (below 1); the
            bucket's new state is written either way.

        Raises:
            RateLimited: the rate is 0 (nothing is admitted).
            MonitorConfigError: the rate is negative or the burst is below 1.
        """
        check_limits(rate_per_minute, burst)
        per_second = rate_per_minute / 60.0
        t = now
        row = conn.execute(
            "SELECT tokens, updated FROM rate_buckets WHERE subject = ?", (subject,)
        ).fetchone()
        if row is None:
            tokens = float(burst)
        else:
            elapsed = max(0.0, t - row[1])
            tokens = min(float(burst), row[0] + elapsed * per_second)
        admitted = tokens >= 1.0
        if admitted:
            tokens -= 1.0
        full_at = t + (burst - tokens) / per_second
        conn.execute(
            "INSERT INTO rate_buckets (subject, tokens, updated, full_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(subject) DO UPDATE SET "
            "tokens = excluded.tokens, updated = excluded.updated, full_at = excluded.full_at",
            (subject, tokens, t, full_at),
        )
        self._calls += 1
        if self._calls % PRUNE_EVERY == 0:
            # A bucket that has refilled completely is the same as no bucket.
            conn.execute("DELETE FROM rate_buckets WHERE full_at < ?", (t,))
        return None if admitted else tokens

    def tokens(self, subject: str) -> float | None:
        """Return the tokens saved in ``subject``'s bucket at its last update, if any."""
        if isinstance(self.store, PostgresMonitorStore):
            return self.store.tokens(subject)
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT tokens FROM rate_buckets WHERE subject = ?", (subject,)
            ).fetchone()
        return None if row is None else float(row[0])

    def close(self) -> None:
        """Close this process's connection to the store."""
        self.store.close()
