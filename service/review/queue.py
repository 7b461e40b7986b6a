"""The human review queue: flagged requests waiting for a reviewer's verdict.

One SQLite file (``$ZTML_HOME/review.db`` by default), created ``0600`` in a ``0700``
directory, in WAL mode with a busy timeout so several service worker processes and the
``ztml review`` CLI can use it at once. Resolving is a single conditional UPDATE, so two
reviewers racing on one item cannot both resolve it.

The replicas of a scaled-out service share one queue in PostgreSQL instead
(:mod:`service.review.postgres`): give :class:`ReviewQueue` the ``postgresql://`` URL of
``ZTML_MONITOR_URL``; :func:`default_location` picks the one the environment names.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from service.review.errors import (
    ReviewError,
    ReviewInputError,
    ReviewNotFoundError,
    ReviewStateError,
    ReviewStoreError,
)
from service.review.instances import (
    DIGITS_FEATURES,
    InputSchema,
    Layout,
    check_features,
    check_instances,
    check_layout,
)
from service.review.postgres import COLUMNS, PostgresReviewStore
from service.toolchain.paths import ztml_home
from service.toolchain.sqlite import connect_shared, create_private

Status = Literal["open", "resolved"]
StatusFilter = Literal["open", "resolved", "all"]
Verdict = Literal["benign", "malicious"]
STATUS_FILTERS: tuple[StatusFilter, ...] = get_args(StatusFilter)
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
MAX_TEXT = 4096
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS review_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    subject TEXT,
    tenant TEXT,
    model_digest TEXT,
    reasons TEXT NOT NULL,
    suspicion REAL NOT NULL,
    input_digest TEXT,
    instances TEXT NOT NULL,
    created TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    verdict TEXT CHECK (verdict IS NULL OR verdict IN ('benign', 'malicious')),
    reviewer TEXT,
    note TEXT,
    resolved TEXT,
    input_schema TEXT
);
CREATE INDEX IF NOT EXISTS review_items_status ON review_items (status, id);
"""


#: The environment variable naming the store shared by replicas (monitors and review queue).
SHARED_STORE_ENV = "ZTML_MONITOR_URL"


def default_location() -> str | Path:
    """The queue the environment names: ``$ZTML_MONITOR_URL``, else ``$ZTML_HOME/review.db``."""
    return os.environ.get(SHARED_STORE_ENV) or ztml_home() / "review.db"


def _is_postgres(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ReviewItem:
    """One flagged request and, once resolved, its verdict.

    Attributes:
        id: The item id (positive integer).
        request_id: The service request id (matches the audit log).
        subject: The authenticated subject, if any.
        tenant: The subject's tenant, if any.
        model_digest: ``sha256:...`` of the model that served the request.
        reasons: Why it was flagged (e.g. ``feature squeezing score 0.41 > 0.12``).
        suspicion: The suspicion score in [0, 1].
        input_digest: ``sha256:...`` of the request's inputs.
        instances: The (N, d) inputs, for the reviewer.
        created: RFC 3339 UTC time the item was queued.
        status: ``open`` or ``resolved``.
        verdict: ``benign`` or ``malicious`` once resolved.
        reviewer: Who resolved it.
        note: The reviewer's note.
        resolved: RFC 3339 UTC time it was resolved.
        layout: ``(C, H, W)`` of an image model's inputs, or None.
        features: The feature names of a tabular model's inputs, or None.
    """

    id: int
    request_id: str
    subject: str | None
    tenant: str | None
    model_digest: str | None
    reasons: tuple[str, ...]
    suspicion: float
    input_digest: str | None
    instances: tuple[tuple[float, ...], ...]
    created: str
    status: Status
    verdict: Verdict | None
    reviewer: str | None
    note: str | None
    resolved: str | None
    layout: Layout | None = None
    features: tuple[str, ...] | None = None

    @property
    def is_image(self) -> bool:
        """True if the rows are pictures: a layout, or 64 unnamed values (an 8x8 digit)."""
        if self.layout is not None:
            return True
        width = len(self.instances[0]) if self.instances else 0
        return self.features is None and width == DIGITS_FEATURES

    def to_dict(self) -> dict[str, Any]:
        """Return the item as a JSON-ready dict.

        ``layout`` and ``features`` appear only when the item has them, so an item of
        the built-in digits model reads exactly as before they existed.
        """
        fields: dict[str, Any] = {
            "id": self.id,
            "request_id": self.request_id,
            "subject": self.subject,
            "tenant": self.tenant,
            "model_digest": self.model_digest,
            "reasons": list(self.reasons),
            "suspicion": self.suspicion,
            "input_digest": self.input_digest,
            "instances": [list(row) for row in self.instances],
            "created": self.created,
            "status": self.status,
            "verdict": self.verdict,
            "reviewer": self.reviewer,
            "note": self.note,
            "resolved": self.resolved,
        }
        if self.layout is not None:
            fields["layout"] = list(self.layout)
        if self.features is not None:
            fields["features"] = list(self.features)
        return fields


def _text(value: object, name: str, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        need = "a non-empty string" + (" or None" if optional else "")
        raise ReviewInputError(f"{name} must be {need} of at most {MAX_TEXT} characters")
    return value


def _secure_file(path: Path) -> None:
    """Create the parent (0700) and the database file (0600); refuse loose permissions."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)
    create_private(path)
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise ReviewStoreError(f"review database {path} is not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ReviewStoreError(
            f"review database {path} has mode {stat.S_IMODE(mode):04o}; it holds user inputs "
            f"and must be readable by its owner only. Fix it with `chmod 600 {path}`."
        )
    dir_mode = parent.stat().st_mode
    if dir_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ReviewStoreError(
            f"directory {parent} is writable by group or others (mode "
            f"{stat.S_IMODE(dir_mode):04o}); fix it with `chmod 700 {parent}`."
        )


def _add_input_schema_column(conn: sqlite3.Connection) -> None:
    """Give a queue created before layouts existed the ``input_schema`` column (NULL: none).

    Two processes opening an old file at once may both try; the loser's "duplicate
    column" is the outcome it wanted.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(review_items)")}
    if "input_schema" in columns:
        return
    try:
        conn.execute("ALTER TABLE review_items ADD COLUMN input_schema TEXT")
    except sqlite3.OperationalError as err:
        if "duplicate column" not in str(err):
            raise


class ReviewQueue:
    """Flagged requests for human review, in SQLite or in a shared PostgreSQL database.

    Args:
        path: The database file, created ``0600`` (and its directory ``0700``) if
            missing; or a ``postgresql://`` URL (the table is created on first use).

    Raises:
        ReviewStoreError: If the file has loose permissions or is not a usable database.
    """

    def __init__(self, path: Path | str) -> None:
        self._shared: PostgresReviewStore | None = None
        if _is_postgres(path):
            self._shared = PostgresReviewStore(str(path))
            self.path = Path(self._shared.display_url)  # for messages only
            return
        self.path = Path(path)
        _secure_file(self.path)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = connect_shared(self.path, busy_timeout_ms=BUSY_TIMEOUT_MS, synchronous="NORMAL")
            conn.executescript(_SCHEMA)
            _add_input_schema_column(conn)
        except sqlite3.DatabaseError as err:
            raise ReviewStoreError(
                f"review database {self.path} is not usable ({err}); move it away to start a "
                "new queue"
            ) from err
        return conn

    def close(self) -> None:
        """Close the database connection."""
        if self._shared is not None:
            self._shared.close()
            return
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ReviewQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (call with the lock held)."""
        if os.getpid() != self._pid:  # forked: never share a connection with the parent
            self._pid = os.getpid()
            self._conn = self._connect()
        return self._conn

    def _execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self._connection().execute(sql, params)
        except sqlite3.Error as err:
            raise ReviewStoreError(f"review database {self.path}: {err}") from err

    def _fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Run a query and read all its rows under the lock (errors as ReviewStoreError)."""
        try:
            with self._lock:
                return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise ReviewStoreError(f"review database {self.path}: {err}") from err

    def add(
        self,
        *,
        request_id: str,
        subject: str | None,
        tenant: str | None,
        model_digest: str | None,
        reasons: Sequence[str],
        suspicion: float,
        input_digest: str | None,
        instances: object,
        layout: tuple[int, int, int] | None = None,
        features: Sequence[str] | None = None,
    ) -> int:
        """Queue a flagged request for review.

        Args:
            request_id: The service request id.
            subject: The authenticated subject.
            tenant: The subject's tenant.
            model_digest: ``sha256:...`` of the serving model.
            reasons: Why the request was flagged (at least one).
            suspicion: The suspicion score, in [0, 1].
            input_digest: ``sha256:...`` of the inputs.
            instances: The sanitized inputs, (N, d) with 1 <= d <= 1,000,000 (or
                (N, 8, 8) digits, or (N, C, H, W) images matching ``layout``).
            layout: ``(C, H, W)`` of an image model (``C * H * W == d``), shown as
                pictures by ``ztml review show``; None for a model that is not an image.
            features: The ``d`` feature names of a tabular model, shown as a
                ``feature: value`` table; None if the model does not name them.

        Returns:
            The new item's id.

        Raises:
            ReviewInputError: If a field is malformed.
            ReviewStoreError: If the database cannot be written.
        """
        reason_list = [reasons] if isinstance(reasons, str) else list(reasons)
        if not reason_list or not all(isinstance(r, str) and r for r in reason_list):
            raise ReviewInputError("reasons must be a non-empty list of non-empty strings")
        if (
            isinstance(suspicion, bool)
            or not isinstance(suspicion, int | float)
            or not math.isfinite(suspicion)
            or not 0.0 <= suspicion <= 1.0
        ):
            raise ReviewInputError(f"suspicion must be a number in [0, 1], got {suspicion!r}")
        rows = check_instances(instances, layout)
        schema = InputSchema(
            layout=check_layout(layout, len(rows[0])),
            features=check_features(features, len(rows[0])),
        )
        row = (
            _text(request_id, "request_id", optional=False),
            _text(subject, "subject", optional=True),
            _text(tenant, "tenant", optional=True),
            _text(model_digest, "model_digest", optional=True),
            json.dumps(reason_list),
            float(suspicion),
            _text(input_digest, "input_digest", optional=True),
            json.dumps(rows),
            _now(),
            schema.encode(),
        )
        if self._shared is not None:
            return self._shared.insert(row)
        cursor = self._execute(
            "INSERT INTO review_items (request_id, subject, tenant, model_digest, reasons, "
            "suspicion, input_digest, instances, created, input_schema) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def list(self, status: StatusFilter = "open") -> list[ReviewItem]:
        """Return the items with a status, oldest first.

        Args:
            status: ``open``, ``resolved`` or ``all``.

        Raises:
            ReviewInputError: On an unknown status.
        """
        if status not in STATUS_FILTERS:
            raise ReviewInputError(f"unknown status {status!r}; choose one of {STATUS_FILTERS}")
        if self._shared is not None:
            rows = self._shared.select(status=None if status == "all" else status)
        elif status == "all":
            rows = self._fetch_all(f"SELECT {COLUMNS} FROM review_items ORDER BY id")  # noqa: S608
        else:
            rows = self._fetch_all(
                f"SELECT {COLUMNS} FROM review_items WHERE status = ? ORDER BY id",  # noqa: S608
                (status,),
            )
        return [self._item(row) for row in rows]

    def get(self, item_id: int) -> ReviewItem:
        """Return one item.

        Raises:
            ReviewNotFoundError: If no item has that id.
        """
        if self._shared is not None:
            rows = self._shared.select(item_id=int(item_id))
        else:
            rows = self._fetch_all(
                f"SELECT {COLUMNS} FROM review_items WHERE id = ?",  # noqa: S608
                (int(item_id),),
            )
        if not rows:
            raise ReviewNotFoundError(
                f"no review item with id {item_id}; see `ztml review list --status all`"
            )
        return self._item(rows[0])

    def resolve(self, item_id: int, *, verdict: Verdict, reviewer: str, note: str) -> ReviewItem:
        """Record a reviewer's verdict on an open item.

        Args:
            item_id: The item.
            verdict: ``benign`` or ``malicious``.
            reviewer: Who decided.
            note: Why (may be empty).

        Returns:
            The resolved item.

        Raises:
            ReviewInputError: On an unknown verdict or a malformed reviewer/note.
            ReviewNotFoundError: If no item has that id.
            ReviewStateError: If the item is already resolved.
        """
        if verdict not in VERDICTS:
            raise ReviewInputError(f"unknown verdict {verdict!r}; choose one of {VERDICTS}")
        who = _text(reviewer, "reviewer", optional=False)
        if not isinstance(note, str) or len(note) > MAX_TEXT:
            raise ReviewInputError(f"note must be a string of at most {MAX_TEXT} characters")
        assert who is not None
        if self._shared is not None:
            changed = self._shared.resolve(
                int(item_id), verdict=verdict, reviewer=who, note=note, when=_now()
            )
        else:
            changed = self._execute(
                "UPDATE review_items SET status = 'resolved', verdict = ?, reviewer = ?, "
                "note = ?, resolved = ? WHERE id = ? AND status = 'open'",
                (verdict, who, note, _now(), int(item_id)),
            ).rowcount
        item = self.get(item_id)
        if changed != 1:
            raise ReviewStateError(
                f"review item {item_id} was already resolved as {item.verdict} by "
                f"{item.reviewer} at {item.resolved}; it cannot be resolved twice"
            )
        return item

    @staticmethod
    def _item(row: tuple[Any, ...]) -> ReviewItem:
        schema = InputSchema.decode(row[15])
        try:
            return ReviewItem(
                id=int(row[0]),
                request_id=row[1],
                subject=row[2],
                tenant=row[3],
                model_digest=row[4],
                reasons=tuple(json.loads(row[5])),
                suspicion=float(row[6]),
                input_digest=row[7],
                instances=tuple(tuple(float(v) for v in r) for r in json.loads(row[8])),
                created=row[9],
                status=row[10],
                verdict=row[11],
                reviewer=row[12],
                note=row[13],
                resolved=row[14],
                layout=schema.layout,
                features=schema.features,
            )
        except (ValueError, TypeError) as err:
            raise ReviewError(f"review item {row[0]} is corrupt: {err}") from err
