"""Model-extraction detection in the spirit of PRADA (Juuti et al., EuroS&P 2019).

For each subject the detector keeps its last ``history`` queries (float32 rows) and, for
every new query, the minimum L2 distance to those earlier queries (to the earlier queries
of the same predicted class when labels are given). Natural inputs arrive at distances
that are close to normally distributed; the synthetic queries extraction attacks make
(Jacobian-based augmentation, small perturbations of a few seeds) produce many tiny
distances and a few large ones, far from normal. Once ``min_queries`` distances exist the
Shapiro–Wilk statistic W of the last ``max_distances`` of them is computed and
``W < delta`` flags the subject.

Two details go beyond the paper:

* Exact repeats (distance below ``1e-6``) are not added to the distances: a repeated
  query teaches an attacker nothing new, and a benign client retrying or a demo resending
  one image would otherwise look like an attack.
* Independent uniform-noise queries are far apart and their minimum distances are nearly
  constant in many dimensions (concentration of measure, 64 for the digits): W stays
  high, but the coefficient of variation (std/mean) of the distances is tiny. A
  coefficient of variation below ``min_cv`` flags the subject too.

Queries are unit inputs of any width d (each subject's history keeps its width; a query of
another width, after the served model changed, starts the history over). W and the CV are
scale-free, but their range on benign traffic depends on the data: benign breast-cancer
rows (30 features, clustered, with outliers) reach W = 0.58, so the digits' ``delta``
would flag them. :func:`service.monitor.calibration.calibrate_thresholds` derives both
thresholds from a model's own data.

The defaults were calibrated on the digits (``python -m service.monitor.calibration``):
benign traffic, i.e. random test-set rows, gave W >= 0.90 and CV >= 0.17 at every point of
60 runs of 300 queries; Jacobian-style augmentation of 5-50 seeds gave W <= 0.73, small
noise around 3 seeds W <= 0.11, and uniform noise CV <= 0.09. Hence ``delta = 0.85`` and
``min_cv = 0.12``.

``suspicion`` is in [0, 1]: 0.5 exactly at a threshold, rising to 1 as W falls to
``2*delta - 1`` or the CV to ``min_cv / 2``; it is 0 before ``min_queries`` distances.
State is in the shared database, one row per subject, so all workers see one history
(with a PostgreSQL store, all replicas too: the row is locked while it is updated).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.monitor.errors import MonitorConfigError, MonitorInputError
from service.monitor.postgres import HistoryRow, PostgresMonitorStore
from service.monitor.store import open_store

SCHEMA = """
CREATE TABLE IF NOT EXISTS extraction_state (
    subject TEXT PRIMARY KEY,
    n_queries INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    history BLOB NOT NULL,
    labels BLOB NOT NULL,
    distances BLOB NOT NULL,
    updated REAL NOT NULL
)
"""
DEFAULT_DELTA = 0.85
DEFAULT_MIN_CV = 0.12
DUPLICATE_DISTANCE = 1e-6
IDLE_SECONDS = 7 * 24 * 3600.0
PRUNE_EVERY = 1000

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ExtractionSignal:
    """The subject's extraction suspicion after the latest queries."""

    suspicion: float
    flagged: bool
    shapiro_w: float | None = None
    distance_cv: float | None = None
    n_distances: int = 0


def _as_rows(x: Any) -> FloatArray:
    try:
        rows = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise MonitorInputError("queries must be a numeric array") from None
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise MonitorInputError(f"queries must have shape (N, features), not {rows.shape}")
    if not np.isfinite(rows).all():
        raise MonitorInputError("queries must be finite")
    return np.ascontiguousarray(rows)


def distance_statistics(distances: npt.NDArray[np.floating[Any]]) -> tuple[float, float]:
    """Return the Shapiro–Wilk W and the coefficient of variation of the distances.

    A set of identical distances (zero spread) has no normal shape at all: W is 0.
    """
    from scipy.stats import shapiro

    # The distances are finite 1-D data, so scipy's axis/NaN-policy wrapper (about 90% of
    # the cost of a call) is skipped when the plain function is exposed.
    plain_shapiro = getattr(shapiro, "__wrapped__", shapiro)
    d = np.asarray(distances, dtype=np.float64)
    mean = float(d.mean())
    cv = float(d.std() / mean) if mean > 0 else 0.0
    if np.ptp(d) <= 0:
        return 0.0, cv
    return float(plain_shapiro(d).statistic), cv


class ExtractionDetector:
    """PRADA-style extraction detector over per-subject query histories.

    Args:
        db_path: The shared SQLite file (default ``$ZTML_HOME/run/monitor.db``) or a
            ``postgresql://`` URL.
        delta: Shapiro–Wilk threshold; W below it flags the subject.
        min_cv: Coefficient-of-variation threshold for near-constant distances.
        min_queries: Distances needed before the subject can be flagged.
        history: Past queries kept per subject.
        max_distances: Most recent distances the tests run on.
    """

    def __init__(
        self,
        db_path: Path | str | None = None,
        *,
        delta: float = DEFAULT_DELTA,
        min_cv: float = DEFAULT_MIN_CV,
        min_queries: int = 30,
        history: int = 200,
        max_distances: int = 300,
    ) -> None:
        if not 0 < delta < 1 or min_cv < 0 or min_queries < 3 or history < 1:
            raise MonitorConfigError(
                "Extraction detector needs 0 < delta < 1, min_cv >= 0, min_queries >= 3 "
                "and history >= 1."
            )
        if max_distances < min_queries:
            raise MonitorConfigError("max_distances must be at least min_queries.")
        self.store = open_store(db_path, schema=SCHEMA)
        self.delta = delta
        self.min_cv = min_cv
        self.min_queries = min_queries
        self.history = history
        self.max_distances = max_distances
        self._calls = 0

    def observe(
        self,
        subject: str,
        x: npt.ArrayLike,
        *,
        labels: npt.ArrayLike | None = None,
        now: float | None = None,
    ) -> ExtractionSignal:
        """Add a batch of queries to ``subject``'s history and return the signal.

        Args:
            subject: Who sent the queries.
            x: One query (features,) or a batch (N, features).
            labels: Optional predicted classes of the batch; distances are then taken to
                earlier queries of the same class, as in PRADA.
            now: Current Unix time (default ``time.time()``).

        Raises:
            MonitorInputError: ``x`` is not a finite 1-D or 2-D array, or the labels do
                not match it.
            MonitorStoreError: the shared database is unavailable (fail closed).
        """
        rows = _as_rows(x)
        if labels is None:
            batch_labels = np.full(rows.shape[0], -1, dtype=np.int16)
        else:
            batch_labels = np.asarray(labels, dtype=np.int16).reshape(-1)
            if batch_labels.shape[0] != rows.shape[0]:
                raise MonitorInputError("labels must have one entry per query")
        if isinstance(self.store, PostgresMonitorStore):
            kept: list[npt.NDArray[np.float32]] = []

            def advance(current: HistoryRow | None) -> HistoryRow:
                new, distances = self._advance(current, rows, batch_labels)
                kept[:] = [distances]
                return new

            self.store.update_history(subject, advance, idle_seconds=IDLE_SECONDS, now=now)
            return self.signal(kept[0])
        t = time.time() if now is None else now
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT n_queries, dim, history, labels, distances FROM extraction_state "
                "WHERE subject = ?",
                (subject,),
            ).fetchone()
            current = None if row is None else HistoryRow(*row)
            new, distances = self._advance(current, rows, batch_labels)
            conn.execute(
                "INSERT INTO extraction_state "
                "(subject, n_queries, dim, history, labels, distances, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(subject) DO UPDATE SET "
                "n_queries = excluded.n_queries, dim = excluded.dim, "
                "history = excluded.history, labels = excluded.labels, "
                "distances = excluded.distances, updated = excluded.updated",
                (subject, new.n_queries, new.dim, new.history, new.labels, new.distances, t),
            )
            self._calls += 1
            if self._calls % PRUNE_EVERY == 0:
                conn.execute("DELETE FROM extraction_state WHERE updated < ?", (t - IDLE_SECONDS,))
        return self.signal(distances)

    def _advance(
        self,
        current: HistoryRow | None,
        rows: FloatArray,
        batch_labels: npt.NDArray[np.int16],
    ) -> tuple[HistoryRow, npt.NDArray[np.float32]]:
        """Add a batch to a subject's stored state; return the new state and its distances.

        A state of another dimension (the model changed) starts over.
        """
        dim = rows.shape[1]
        if current is None or current.dim != dim:
            n_queries, distances = 0, np.empty(0, dtype=np.float32)
            past = np.empty((0, dim), dtype=np.float32)
            past_labels = np.empty(0, dtype=np.int16)
        else:
            n_queries = current.n_queries
            distances = np.frombuffer(current.distances, dtype=np.float32)
            past = np.frombuffer(current.history, dtype=np.float32).reshape(-1, dim)
            past_labels = np.frombuffer(current.labels, dtype=np.int16)
        new = self._distances(past, past_labels, rows, batch_labels)
        distances = np.concatenate([distances, new])[-self.max_distances :]
        history = np.concatenate([past, rows])[-self.history :]
        history_labels = np.concatenate([past_labels, batch_labels])[-self.history :]
        state = HistoryRow(
            n_queries=n_queries + rows.shape[0],
            dim=dim,
            history=np.ascontiguousarray(history).tobytes(),
            labels=np.ascontiguousarray(history_labels).tobytes(),
            distances=distances.astype(np.float32).tobytes(),
        )
        return state, distances

    def _distances(
        self,
        past: FloatArray,
        past_labels: npt.NDArray[np.int16],
        rows: FloatArray,
        labels: npt.NDArray[np.int16],
    ) -> FloatArray:
        """Return the minimum distance of each new row to the ``history`` queries before it."""
        history = np.concatenate([past, rows])
        all_labels = np.concatenate([past_labels, labels])
        start = past.shape[0]
        new: list[float] = []
        for i in range(start, history.shape[0]):
            lo = max(0, i - self.history)
            earlier = history[lo:i]
            if labels[i - start] >= 0:
                earlier = earlier[all_labels[lo:i] == labels[i - start]]
            if earlier.shape[0] == 0:
                continue
            d = float(np.sqrt(((earlier - history[i]) ** 2).sum(axis=1)).min())
            if d > DUPLICATE_DISTANCE:
                new.append(d)
        return np.asarray(new, dtype=np.float32)

    def signal(self, distances: npt.NDArray[np.floating[Any]]) -> ExtractionSignal:
        """Judge a distance sequence (the last ``max_distances`` are used)."""
        d = np.asarray(distances, dtype=np.float64)[-self.max_distances :]
        if d.shape[0] < self.min_queries:
            return ExtractionSignal(suspicion=0.0, flagged=False, n_distances=int(d.shape[0]))
        w, cv = distance_statistics(d)
        from_w = (1.0 - w) / (2.0 * (1.0 - self.delta))
        from_cv = 0.0 if self.min_cv == 0 else (0.5 * self.min_cv / cv if cv > 0 else 1.0)
        suspicion = float(np.clip(max(from_w, from_cv), 0.0, 1.0))
        return ExtractionSignal(
            suspicion=suspicion,
            flagged=w < self.delta or cv < self.min_cv,
            shapiro_w=w,
            distance_cv=cv,
            n_distances=int(d.shape[0]),
        )

    def reset(self, subject: str) -> None:
        """Forget ``subject``'s history (after a reviewer clears it)."""
        if isinstance(self.store, PostgresMonitorStore):
            self.store.delete_history(subject)
            return
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM extraction_state WHERE subject = ?", (subject,))

    def close(self) -> None:
        """Close this process's connection to the store."""
        self.store.close()
