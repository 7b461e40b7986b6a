"""The review queue in PostgreSQL: one queue for every replica of a scaled-out service.

With ``ZTML_MONITOR_URL=postgresql://...`` (the store the monitors share) the service's
replicas queue flagged requests in the table ``ztml_review_items`` and ``ztml review``
reads and resolves them there, from any pod or any machine that reaches the database.
Resolving is one conditional UPDATE, so two reviewers racing on one item cannot both
resolve it. Commits are durable (the default ``synchronous_commit``).

A failed statement raises :class:`~service.review.errors.ReviewStoreError` (the service
answers 503) and drops the connection; the next call connects again, so the queue
recovers without a restart once the database is back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from service.ledger.storage.url import redact_url
from service.pgconn import ProcessConnection
from service.review.errors import ReviewStoreError

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
TABLE = "ztml_review_items"
STATEMENT_TIMEOUT_MS = 5000
#: Advisory-lock key of the schema set-up ("ztml" + "rev" in ASCII).
SCHEMA_LOCK_KEY = 0x7A746D6C_726576
#: The columns in the order :meth:`service.review.queue.ReviewQueue._item` reads them.
COLUMNS = (
    "id, request_id, subject, tenant, model_digest, reasons, suspicion, input_digest, "
    "instances, created, status, verdict, reviewer, note, resolved, input_schema"
)
SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id TEXT NOT NULL,
    subject TEXT,
    tenant TEXT,
    model_digest TEXT,
    reasons TEXT NOT NULL,
    suspicion DOUBLE PRECISION NOT NULL,
    input_digest TEXT,
    instances TEXT NOT NULL,
    created TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    verdict TEXT CHECK (verdict IS NULL OR verdict IN ('benign', 'malicious')),
    reviewer TEXT,
    note TEXT,
    resolved TEXT
)""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_status ON {TABLE} (status, id)",
    # Tables created before layouts existed gain the column; NULL reads as no layout.
    f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS input_schema TEXT",
)


class PostgresReviewStore:
    """This process's connection to the review table (opened on first use).

    Args:
        url: ``postgresql://user@host:port/db`` or ``postgresql://?service=NAME``.
    """

    def __init__(self, url: str) -> None:
        self._pg = ProcessConnection(
            url,
            application_name="ztml-review",
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            schema=SCHEMA,
            schema_lock_key=SCHEMA_LOCK_KEY,
            failure=lambda why: ReviewStoreError(f"review queue {redact_url(url)}: {why}"),
        )
        self.url = url
        self.display_url = self._pg.display_url

    def _run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        return self._pg.run(operation)

    def insert(self, row: Sequence[object]) -> int:
        """Insert an item (the fields of ``ReviewQueue.add``, in column order); return its id."""
        found = self._run(
            lambda conn: conn.execute(
                f"INSERT INTO {TABLE} (request_id, subject, tenant, model_digest, "  # noqa: S608
                "reasons, suspicion, input_digest, instances, created, input_schema) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                tuple(row),
            ).fetchone()
        )
        assert found is not None
        return int(found[0])

    def select(self, *, status: str | None = None, item_id: int | None = None) -> list[Any]:
        """The rows with ``status`` (any if None) or the row ``item_id``, by id."""
        query = f"SELECT {COLUMNS} FROM {TABLE}"  # noqa: S608
        params: tuple[object, ...] = ()
        if item_id is not None:
            query, params = f"{query} WHERE id = %s", (item_id,)
        elif status is not None:
            query, params = f"{query} WHERE status = %s", (status,)
        return self._run(lambda conn: conn.execute(f"{query} ORDER BY id", params).fetchall())

    def resolve(self, item_id: int, *, verdict: str, reviewer: str, note: str, when: str) -> int:
        """Resolve an open item; return 1, or 0 if it is missing or already resolved."""
        return self._run(
            lambda conn: (
                conn.execute(
                    f"UPDATE {TABLE} SET status = 'resolved', verdict = %s, "  # noqa: S608
                    "reviewer = %s, note = %s, resolved = %s WHERE id = %s AND status = 'open'",
                    (verdict, reviewer, note, when, item_id),
                ).rowcount
            )
        )

    def close(self) -> None:
        """Close this process's connection."""
        self._pg.close()
