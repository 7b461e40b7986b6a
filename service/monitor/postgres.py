"""The monitors' state in PostgreSQL, shared by every replica of a scaled-out service.

With ``ZTML_MONITOR_URL=postgresql://...`` the token buckets, the flood counts and the
extraction histories live in three tables of one PostgreSQL database (the scaled-out
stack uses the ledger's server), so N replicas together admit what one bucket allows
and the extraction detector sees every query of a subject.

Each admission is one round trip: the function ``ztml_monitor_admit`` first locks the
subject's bucket row (``SELECT ... FOR UPDATE``), so the admissions of one subject run
one at a time on the server, whichever replica sends them; every statement after the
lock sees what the previous holder committed, so no two replicas can both read the last
token or the last place in the window. It then applies exactly the rules of the SQLite
path (:mod:`service.monitor.admission`): the window check, the bucket, the flood counts.
The time is the database server's clock unless a caller passes one (tests), so replicas
with skewed clocks still share one timeline.

An extraction history is read in one statement, extended in Python, and written back in
one statement that applies only if the subject's version is still the one read (each
write takes a new version from a sequence); if another replica wrote in between, the
history is read again and the queries added to the newer one. So a history is never
updated from a stale copy, and an update is two round trips with no lock held while
Python computes. A writer overtaken :data:`HISTORY_ATTEMPTS` times in a row (many
replicas writing one subject on a busy host) then reads the row ``FOR UPDATE`` in a
transaction and computes holding that lock, so the others queue behind it and it cannot
be overtaken again: every update ends.
(Measured on a 2-core host, a transaction with ``SELECT ... FOR UPDATE`` took four
round trips and about 40% longer; one row per query made the update small but
reading 200 rows back cost more than the whole history in one value, read in binary.)

Commits use ``synchronous_commit = off`` on the monitor's own connections: a commit is
visible to every replica at once but reaches the disk up to three WAL-writer rounds
(about 0.6 s) later, so a crash of the database server may forget the last fraction of
a second of counts (never corrupts them). The review queue and the ledger keep durable
commits.

Failing closed: a store that cannot be reached, or a statement that fails, raises
:class:`~service.monitor.errors.MonitorStoreError` (the service answers 503). The broken
connection is dropped and the next call connects again, so the service recovers without
a restart once the database is back. A call on a connection the server closed since its
last use (a restarted server) is tried once more on a new connection; should the server
have committed it before the connection broke, the retry only counts the request twice,
which errs on the strict side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from service.ledger.storage.url import redact_url
from service.monitor.errors import MonitorStoreError
from service.pgconn import ProcessConnection

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
#: A statement (or a wait for a subject's lock) longer than this fails: 503, not a hang.
STATEMENT_TIMEOUT_MS = 2000
#: Advisory-lock key of the schema set-up ("ztml" + "mon" in ASCII).
SCHEMA_LOCK_KEY = 0x7A746D6C_6D6F6E
PRUNE_EVERY = 1000
#: Optimistic tries of an extraction history update before it takes the row's lock.
HISTORY_ATTEMPTS = 3
GLOBAL = "*"  # flood keys are "s:<subject>", so no subject can collide with it

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS ztml_monitor_buckets (
    subject TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    full_at DOUBLE PRECISION NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS ztml_monitor_flood (
    subject TEXT NOT NULL,
    second BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (subject, second)
)""",
    "CREATE INDEX IF NOT EXISTS ztml_monitor_flood_second ON ztml_monitor_flood (second)",
    # Versions of extraction states: never reused, even for a subject deleted and re-added.
    "CREATE SEQUENCE IF NOT EXISTS ztml_monitor_version",
    # A subject's extraction state, written whole with a new version each time.
    """
CREATE TABLE IF NOT EXISTS ztml_monitor_extraction (
    subject TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    n_queries BIGINT NOT NULL,
    dim INTEGER NOT NULL,
    history BYTEA NOT NULL,
    labels BYTEA NOT NULL,
    distances BYTEA NOT NULL,
    updated DOUBLE PRECISION NOT NULL
)""",
    # Count one request of a subject and of the whole service; return both counts over
    # the window (the seconds after now - window).
    """
CREATE OR REPLACE FUNCTION ztml_monitor_count(
    p_key TEXT, p_window INTEGER, p_now DOUBLE PRECISION,
    OUT subject_count BIGINT, OUT global_count BIGINT
) LANGUAGE plpgsql AS $$
DECLARE
    sec BIGINT := floor(p_now);
BEGIN
    INSERT INTO ztml_monitor_flood AS f (subject, second, n)
        VALUES (p_key, sec, 1), ('*', sec, 1)
        ON CONFLICT (subject, second) DO UPDATE SET n = f.n + 1;
    SELECT COALESCE(sum(n) FILTER (WHERE subject = p_key), 0),
           COALESCE(sum(n) FILTER (WHERE subject = '*'), 0)
        INTO subject_count, global_count
        FROM ztml_monitor_flood
        WHERE subject IN (p_key, '*') AND second > sec - p_window;
END
$$""",
    # Admit one request of p_subject: lock its bucket, check the window (when p_window is
    # given), take a token, count the request. The rules are those of the SQLite path.
    """
CREATE OR REPLACE FUNCTION ztml_monitor_admit(
    p_subject TEXT, p_rate DOUBLE PRECISION, p_burst INTEGER, p_window INTEGER,
    p_now DOUBLE PRECISION,
    OUT admitted BOOLEAN, OUT wait DOUBLE PRECISION,
    OUT subject_count BIGINT, OUT global_count BIGINT
) LANGUAGE plpgsql AS $$
DECLARE
    t DOUBLE PRECISION := COALESCE(p_now, extract(epoch FROM clock_timestamp()));
    per_second DOUBLE PRECISION := p_rate / 60.0;
    v_key TEXT := 's:' || p_subject;
    v_saved DOUBLE PRECISION;
    v_last DOUBLE PRECISION;
    v_tokens DOUBLE PRECISION;
    v_total BIGINT;
    v_oldest BIGINT;
    v_scale DOUBLE PRECISION;
    r RECORD;
BEGIN
    admitted := false;
    -- The subject's row lock: its admissions run one at a time, each seeing the last.
    LOOP
        SELECT b.tokens, b.updated INTO v_saved, v_last
            FROM ztml_monitor_buckets b WHERE b.subject = p_subject FOR UPDATE;
        EXIT WHEN FOUND;
        INSERT INTO ztml_monitor_buckets (subject, tokens, updated, full_at)
            VALUES (p_subject, p_burst, t, t) ON CONFLICT (subject) DO NOTHING;
    END LOOP;
    IF p_window IS NOT NULL THEN
        v_oldest := floor(t) - p_window;
        v_scale := 60.0 / p_window;
        SELECT COALESCE(sum(f.n), 0) INTO v_total
            FROM ztml_monitor_flood f WHERE f.subject = v_key AND f.second > v_oldest;
        IF (v_total + 1) * v_scale > p_rate THEN
            wait := p_window;
            FOR r IN SELECT f.second, f.n FROM ztml_monitor_flood f
                     WHERE f.subject = v_key AND f.second > v_oldest ORDER BY f.second LOOP
                v_total := v_total - r.n;
                IF (v_total + 1) * v_scale <= p_rate THEN
                    wait := (r.second + p_window) - t;
                    EXIT;
                END IF;
            END LOOP;
            RETURN;
        END IF;
    END IF;
    v_tokens := least(p_burst::DOUBLE PRECISION,
                      v_saved + greatest(0.0, t - v_last) * per_second);
    IF v_tokens >= 1.0 THEN
        v_tokens := v_tokens - 1.0;
        admitted := true;
    END IF;
    UPDATE ztml_monitor_buckets b
        SET tokens = v_tokens, updated = t, full_at = t + (p_burst - v_tokens) / per_second
        WHERE b.subject = p_subject;
    IF NOT admitted THEN
        wait := (1.0 - v_tokens) / per_second;
        RETURN;
    END IF;
    IF p_window IS NOT NULL THEN
        SELECT c.subject_count, c.global_count INTO subject_count, global_count
            FROM ztml_monitor_count(v_key, p_window, t) c;
    END IF;
END
$$""",
)


@dataclass(frozen=True)
class Admission:
    """What :meth:`PostgresMonitorStore.admit` decided.

    Attributes:
        admitted: Whether the request took a token (and fit the window).
        wait: For a refused request, the seconds until one would be admitted.
        subject_count: The subject's requests in the window, this one included.
        global_count: The service's requests in the window, this one included.
    """

    admitted: bool
    wait: float
    subject_count: int
    global_count: int


@dataclass(frozen=True)
class HistoryRow:
    """One subject's extraction state as stored (see :mod:`service.monitor.extraction`)."""

    n_queries: int
    dim: int
    history: bytes
    labels: bytes
    distances: bytes


def is_postgres_url(location: object) -> bool:
    """Whether ``location`` is a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


class PostgresMonitorStore:
    """A per-process connection to the monitors' PostgreSQL database.

    The connection is opened on first use (the tables and functions are created then,
    under an advisory lock) and shared by the threads of the process under a lock; a
    forked child opens its own.

    Args:
        url: ``postgresql://user@host:port/db`` or a libpq service
            (``postgresql://?service=ztml`` with ``PGSERVICEFILE``).
    """

    def __init__(self, url: str) -> None:
        self._pg = ProcessConnection(
            url,
            application_name="ztml-monitor",
            options=(
                f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
                f"-c lock_timeout={STATEMENT_TIMEOUT_MS} -c synchronous_commit=off"
            ),
            schema=SCHEMA,
            schema_lock_key=SCHEMA_LOCK_KEY,
            failure=lambda why: MonitorStoreError(
                f"Monitor store {redact_url(url)} unavailable: {why}."
            ),
        )
        self.url = url
        self.display_url = self._pg.display_url
        self._calls = 0
        self._pruned = 0.0

    def run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``operation`` on this process's connection (opened or reopened as needed).

        Raises:
            MonitorStoreError: the database cannot be reached or the operation failed.
        """
        return self._pg.run(operation)

    def ready(self) -> None:
        """Open the connection (creating the schema) if not open yet.

        Raises:
            MonitorStoreError: the database cannot be reached.
        """
        self.run(lambda conn: None)

    def close(self) -> None:
        """Close this process's connection."""
        self._pg.close()

    # -- rate limits and flood counts ------------------------------------------------------

    def admit(
        self,
        subject: str,
        *,
        rate_per_minute: float,
        burst: int,
        window_seconds: int | None,
        now: float | None,
    ) -> Admission:
        """Take a token of ``subject`` and, with a window, check it and count the request.

        Args:
            subject: Whose bucket (its flood key is ``s:<subject>``).
            rate_per_minute: The sustained rate (positive; callers refuse 0 themselves).
            burst: The bucket size.
            window_seconds: The flood window whose count must stay within the rate, and
                where an admitted request is counted; None: the bucket alone.
            now: The Unix time, or None for the database server's clock.
        """

        def call(conn: psycopg.Connection[Any]) -> Admission:
            row = conn.execute(
                "SELECT admitted, wait, subject_count, global_count "
                "FROM ztml_monitor_admit(%s, %s, %s, %s, %s)",
                (subject, float(rate_per_minute), int(burst), window_seconds, now),
            ).fetchone()
            assert row is not None
            self._prune(conn, window_seconds, now)
            return Admission(
                admitted=bool(row[0]),
                wait=float(row[1] or 0.0),
                subject_count=int(row[2] or 0),
                global_count=int(row[3] or 0),
            )

        return self.run(call)

    def count(self, key: str, *, window_seconds: int, now: float | None) -> tuple[int, int]:
        """Count one request of flood key ``key``; return its and the service's window counts."""

        def call(conn: psycopg.Connection[Any]) -> tuple[int, int]:
            row = conn.execute(
                "SELECT subject_count, global_count FROM ztml_monitor_count(%s, %s, "
                "COALESCE(%s, extract(epoch FROM clock_timestamp())))",
                (key, window_seconds, now),
            ).fetchone()
            assert row is not None
            self._prune(conn, window_seconds, now)
            return int(row[0]), int(row[1])

        return self.run(call)

    def tokens(self, subject: str) -> float | None:
        """The tokens saved in ``subject``'s bucket at its last update, if any."""

        def call(conn: psycopg.Connection[Any]) -> float | None:
            row = conn.execute(
                "SELECT tokens FROM ztml_monitor_buckets WHERE subject = %s", (subject,)
            ).fetchone()
            return None if row is None else float(row[0])

        return self.run(call)

    def _prune(self, conn: psycopg.Connection[Any], window: int | None, now: float | None) -> None:
        """Delete expired counts (once a second) and full buckets (every 1000 calls).

        Rows another transaction holds are skipped, so pruning never waits on a lock.
        """
        self._calls += 1
        if window is not None and time.monotonic() - self._pruned >= 1.0:
            self._pruned = time.monotonic()
            conn.execute(
                "DELETE FROM ztml_monitor_flood WHERE (subject, second) IN ("
                "SELECT subject, second FROM ztml_monitor_flood WHERE second <= "
                "floor(COALESCE(%s, extract(epoch FROM clock_timestamp()))) - %s "
                "FOR UPDATE SKIP LOCKED)",
                (now, window),
            )
        if self._calls % PRUNE_EVERY == 0:
            # A bucket that has refilled completely is the same as no bucket.
            conn.execute(
                "DELETE FROM ztml_monitor_buckets WHERE subject IN (SELECT subject FROM "
                "ztml_monitor_buckets WHERE full_at < "
                "COALESCE(%s, extract(epoch FROM clock_timestamp())) FOR UPDATE SKIP LOCKED)",
                (now,),
            )

    # -- extraction histories --------------------------------------------------------------

    def update_history(
        self,
        subject: str,
        advance: Callable[[HistoryRow | None], HistoryRow],
        *,
        idle_seconds: float,
        now: float | None,
    ) -> None:
        """Replace ``subject``'s history by ``advance(current)``, never from a stale copy.

        ``advance`` may run several times (once per attempt), so it must only compute.

        Raises:
            MonitorStoreError: the store is unavailable, or waiting for the subject's
                lock took longer than :data:`STATEMENT_TIMEOUT_MS`.
        """

        def call(conn: psycopg.Connection[Any]) -> None:
            for _attempt in range(HISTORY_ATTEMPTS):
                with conn.cursor(binary=True) as cur:
                    version, current = self._read_history(cur, subject)
                    if self._write_history(cur, subject, version, advance(current), now=now):
                        break
            else:
                self._update_history_locked(conn, subject, advance, now=now)
            self._calls += 1
            if self._calls % PRUNE_EVERY == 0:
                conn.execute(
                    "DELETE FROM ztml_monitor_extraction WHERE subject IN (SELECT subject "
                    "FROM ztml_monitor_extraction WHERE updated < "
                    "COALESCE(%s, extract(epoch FROM clock_timestamp())) - %s "
                    "FOR UPDATE SKIP LOCKED)",
                    (now, idle_seconds),
                )

        self.run(call)

    def _update_history_locked(
        self,
        conn: psycopg.Connection[Any],
        subject: str,
        advance: Callable[[HistoryRow | None], HistoryRow],
        *,
        now: float | None,
    ) -> None:
        """Update ``subject``'s history holding its row lock, so no other writer overtakes.

        Optimistic writers block on the row until this transaction commits, then find a
        newer version and read again. Only the very first write of a subject has no row to
        lock; should another writer insert it first, the second round locks that row.

        Raises:
            MonitorStoreError: the subject's history could not be written in two rounds.
        """
        for _round in range(2):
            with conn.transaction(), conn.cursor(binary=True) as cur:
                version, current = self._read_history(cur, subject, lock=True)
                if self._write_history(cur, subject, version, advance(current), now=now):
                    return
        raise MonitorStoreError(
            f"The extraction history of {subject!r} changed while it was locked."
        )

    @staticmethod
    def _read_history(
        cur: psycopg.Cursor[Any], subject: str, *, lock: bool = False
    ) -> tuple[int | None, HistoryRow | None]:
        """Return ``subject``'s version (None: no row) and history (in binary, one round trip).

        With ``lock``, the row stays locked until the caller's transaction ends.
        """
        found = cur.execute(
            "SELECT version, n_queries, dim, history, labels, distances "
            "FROM ztml_monitor_extraction WHERE subject = %s" + (" FOR UPDATE" if lock else ""),
            (subject,),
        ).fetchone()
        if found is None:
            return None, None
        version, n_queries, dim, history, labels, distances = found
        return int(version), HistoryRow(
            n_queries=int(n_queries),
            dim=int(dim),
            history=bytes(history),
            labels=bytes(labels),
            distances=bytes(distances),
        )

    @staticmethod
    def _write_history(
        cur: psycopg.Cursor[Any],
        subject: str,
        version: int | None,
        new: HistoryRow,
        *,
        now: float | None,
    ) -> bool:
        """Store ``new`` if ``subject`` is still at ``version``; return whether it was."""
        values = {
            "s": subject,
            "v": version,
            "n": new.n_queries,
            "dim": new.dim,
            "h": new.history,
            "l": new.labels,
            "d": new.distances,
            "now": now,
        }
        if version is None:
            cur.execute(
                "INSERT INTO ztml_monitor_extraction (subject, version, n_queries, dim, "
                "history, labels, distances, updated) VALUES (%(s)s, "
                "nextval('ztml_monitor_version'), %(n)s, %(dim)s, %(h)s, %(l)s, %(d)s, "
                "COALESCE(%(now)s, extract(epoch FROM clock_timestamp()))) "
                "ON CONFLICT (subject) DO NOTHING",
                values,
            )
        else:
            cur.execute(
                "UPDATE ztml_monitor_extraction SET version = nextval('ztml_monitor_version'), "
                "n_queries = %(n)s, dim = %(dim)s, history = %(h)s, labels = %(l)s, "
                "distances = %(d)s, "
                "updated = COALESCE(%(now)s, extract(epoch FROM clock_timestamp())) "
                "WHERE subject = %(s)s AND version = %(v)s",
                values,
            )
        return cur.rowcount == 1

    def delete_history(self, subject: str) -> None:
        """Forget ``subject``'s history."""
        self.run(
            lambda conn: conn.execute(
                "DELETE FROM ztml_monitor_extraction WHERE subject = %s", (subject,)
            )
        )
