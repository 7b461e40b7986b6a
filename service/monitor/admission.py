"""Admit a request: its rate-limit token and its flood count in one database transaction.

The service checks each request against the subject's token bucket
(:class:`~service.monitor.ratelimit.RateLimiter`) and counts it for flood detection
(:class:`~service.monitor.flood.FloodDetector`) before asking the policy. When both use
the same shared database (the service's configuration), :func:`admit` does both in one
``BEGIN IMMEDIATE`` transaction: one lock and one commit per request instead of two, with
exactly the outcome of calling them one after the other (a refused request is not
counted, as before).

The bucket and the policy's per-minute limit agree: with the policy's limit as
``rate_per_minute``, a request is admitted only if the subject's counted rate including
it (the policy's ``monitor.rate_per_minute``) stays within that limit. A bucket alone
would not do: after a pause it admits its burst on top of a minute's refill, up to
``burst + rate_per_minute`` requests in one window, which the policy would deny with 403.
A request the window refuses gets 429 with the time until enough of the window has
passed, so a client that waits for ``Retry-After`` is never denied for its rate.

With a PostgreSQL store shared by several replicas, the same three steps are one call of
the database function ``ztml_monitor_admit`` (:mod:`service.monitor.postgres`), which
holds the subject's row lock throughout: two replicas can never both take the last token
or the last place in the window.
"""

from __future__ import annotations

import time

from service.monitor.errors import MonitorConfigError, RateLimited
from service.monitor.flood import FloodDetector, FloodSignal
from service.monitor.postgres import PostgresMonitorStore
from service.monitor.ratelimit import RateLimiter, check_limits
from service.monitor.store import MonitorStore


def admit(
    limiter: RateLimiter,
    flood: FloodDetector,
    subject: str,
    *,
    rate_per_minute: float,
    burst: int,
    now: float | None = None,
) -> FloodSignal:
    """Take one token from ``subject``'s bucket, then count the admitted request.

    Args:
        limiter: The token buckets.
        flood: The flood detector.
        subject: Who the request is charged to.
        rate_per_minute: The subject's sustained rate; ``0`` refuses everything.
        burst: The bucket size.
        now: The current Unix time (default ``time.time()``); for tests.

    Returns:
        The flood signal including this request.

    Raises:
        RateLimited: the bucket is empty, or the request would take the subject's rate over
            the window above ``rate_per_minute`` (the request is not counted either way).
        MonitorConfigError: the rate or burst is invalid.
        MonitorStoreError: the shared database is unavailable (fail closed).
    """
    if isinstance(limiter.store, PostgresMonitorStore) or isinstance(
        flood.store, PostgresMonitorStore
    ):
        return _admit_shared(
            limiter, flood, subject, rate_per_minute=rate_per_minute, burst=burst, now=now
        )
    assert isinstance(limiter.store, MonitorStore) and isinstance(flood.store, MonitorStore)
    t = time.time() if now is None else now
    if limiter.store.db_path != flood.store.db_path:  # two databases: two transactions
        with flood.store.transaction() as conn:
            wait = flood.room(conn, subject, limit_per_minute=rate_per_minute, now=t)
        if wait is not None:
            raise RateLimited(wait)
        limiter.acquire(subject, rate_per_minute=rate_per_minute, burst=burst, now=t)
        return flood.observe(subject, now=t)
    flood.store.ready()  # the flood table exists (created by the detector's own schema)
    with limiter.store.transaction() as conn:
        wait = flood.room(conn, subject, limit_per_minute=rate_per_minute, now=t)
        if wait is not None:
            raise RateLimited(wait)  # rolled back: nothing was written
        left = limiter.take(conn, subject, rate_per_minute=rate_per_minute, burst=burst, now=t)
        if left is None:
            return flood.count(conn, subject, now=t)  # committed on leaving the block
    raise RateLimited((1.0 - left) / (rate_per_minute / 60.0))


def _admit_shared(
    limiter: RateLimiter,
    flood: FloodDetector,
    subject: str,
    *,
    rate_per_minute: float,
    burst: int,
    now: float | None,
) -> FloodSignal:
    """:func:`admit` on a PostgreSQL store: one call of ``ztml_monitor_admit``."""
    store = limiter.store
    if not isinstance(store, PostgresMonitorStore) or not (
        isinstance(flood.store, PostgresMonitorStore) and flood.store.url == store.url
    ):
        raise MonitorConfigError(
            "The rate limiter and the flood detector must share one PostgreSQL store."
        )
    check_limits(rate_per_minute, burst)
    decided = store.admit(
        subject,
        rate_per_minute=rate_per_minute,
        burst=burst,
        window_seconds=flood.window_seconds,
        now=now,
    )
    if not decided.admitted:
        raise RateLimited(decided.wait)
    return flood.signal(decided.subject_count, decided.global_count)
