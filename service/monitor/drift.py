"""Input drift: are the rows the service receives still distributed like the training data?

:class:`DriftMonitor` collects incoming rows; each time ``window`` rows have arrived (or,
with ``every=k``, every k rows once the window is full) it runs a two-sample
Kolmogorov–Smirnov test per feature between the window and the training reference and
controls the false discovery rate over the features with Benjamini–Hochberg (or the
family-wise error with Bonferroni). Drift is declared when any feature's corrected p-value
is at most ``alpha``.

Rows are unit inputs of any width d (the model's features mapped to [0, 1]); the width
is the reference's, and incoming rows of another width are refused.

Features that are constant in the reference (the digits have always-blank border pixels)
are not KS-tested: the test is meaningless there and they would only dilute the
correction. Instead, for each such feature, the number of window rows that leave the
constant is tested against a binomial tail with rate ``1 / (n_reference + 1)`` (the
reference never showed one), and that p-value joins the corrected family; ink in a pixel
that is always blank is strong evidence of drift or noise.

Cross-worker behaviour: each worker process keeps its own window in memory. Drift is a
property of the input distribution, and the load balancer spreads requests across workers,
so every worker sees a sample of the same stream; sharing rows through the database would
add a large write per request for no statistical gain. A single worker therefore needs
``window`` requests of its own before it reports.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.monitor.errors import MonitorConfigError, MonitorInputError

Correction = Literal["bh", "bonferroni"]
CONSTANT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class DriftResult:
    """One completed drift test over a window of incoming rows.

    Attributes:
        drifted: Some feature's corrected p-value is at most ``alpha``.
        min_p_value: The smallest corrected p-value over the tested features.
        n_features_drifted: Features whose corrected p-value is at most ``alpha``.
        window: Rows in the tested window.
        n_features_tested: Features in the corrected family.
        drifted_features: Indices of the drifted features.
    """

    drifted: bool
    min_p_value: float
    n_features_drifted: int
    window: int
    n_features_tested: int = 0
    drifted_features: tuple[int, ...] = field(default=())


def _rows(x: Any, width: int | None) -> npt.NDArray[np.float64]:
    try:
        rows = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise MonitorInputError("rows must be a numeric array") from None
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2 or (width is not None and rows.shape[1] != width):
        raise MonitorInputError(f"rows must have shape (N, {width}), not {rows.shape}")
    if not np.isfinite(rows).all():
        raise MonitorInputError("rows must be finite")
    return rows


def benjamini_hochberg(p_values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return Benjamini–Hochberg adjusted p-values (same order as the input)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.shape[0]
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.clip(adjusted, 0.0, 1.0)
    return out


class DriftMonitor:
    """Per-worker drift detector against a training reference.

    Args:
        reference: Training rows, shape (n, features).
        window: Rows per test.
        alpha: Significance level after correction.
        correction: ``"bh"`` (false discovery rate) or ``"bonferroni"``.
        every: ``None`` tests disjoint windows; ``k`` slides the window and tests every
            ``k`` rows once it is full.
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        *,
        window: int = 200,
        alpha: float = 0.01,
        correction: Correction = "bh",
        every: int | None = None,
    ) -> None:
        ref = _rows(reference, None)
        if ref.shape[0] < 2 or window < 10 or not 0 < alpha < 1:
            raise MonitorConfigError(
                "Drift monitoring needs at least 2 reference rows, a window of at least 10 "
                "rows and 0 < alpha < 1."
            )
        if correction not in ("bh", "bonferroni"):
            raise MonitorConfigError(
                f"Unknown correction {correction!r}; use 'bh' or 'bonferroni'."
            )
        if every is not None and not 1 <= every <= window:
            raise MonitorConfigError("every must be between 1 and the window size.")
        self.reference = ref
        self.window = int(window)
        self.alpha = alpha
        self.correction = correction
        self.every = every
        spread = np.ptp(ref, axis=0)
        self.varying = np.flatnonzero(spread > 0)
        self.constant = np.flatnonzero(spread <= 0)
        self.constant_values = ref[0, self.constant]
        self._buffer: deque[npt.NDArray[np.float64]] = deque(maxlen=self.window)
        self._since_test = 0

    def observe(self, x: npt.ArrayLike) -> DriftResult | None:
        """Add incoming rows; return a result when a test ran, else ``None``.

        If a batch completes several windows, the last test's result is returned.

        Raises:
            MonitorInputError: the rows do not have the reference's width or are not finite.
        """
        rows = _rows(x, self.reference.shape[1])
        result: DriftResult | None = None
        for row in rows:
            self._buffer.append(row)
            self._since_test += 1
            if len(self._buffer) < self.window:
                continue
            if self.every is None:
                result = self.test(np.asarray(self._buffer))
                self._buffer.clear()
                self._since_test = 0
            elif self._since_test >= self.every:
                result = self.test(np.asarray(self._buffer))
                self._since_test = 0
        return result

    def p_values(self, window: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return the uncorrected p-value of every tested feature (varying, then constant)."""
        from scipy.stats import binom, ks_2samp

        rows = _rows(window, self.reference.shape[1])
        ks = ks_2samp(self.reference[:, self.varying], rows[:, self.varying], axis=0)
        p_ks = np.atleast_1d(np.asarray(ks.pvalue, dtype=np.float64))
        off = np.abs(rows[:, self.constant] - self.constant_values) > CONSTANT_TOLERANCE
        leaks = off.sum(axis=0)
        rate = 1.0 / (self.reference.shape[0] + 1)
        p_constant = np.where(leaks > 0, binom.sf(leaks - 1, rows.shape[0], rate), 1.0)
        return np.concatenate([p_ks, np.asarray(p_constant, dtype=np.float64)])

    def test(self, window: npt.ArrayLike) -> DriftResult:
        """Test one window of rows against the reference."""
        rows = _rows(window, self.reference.shape[1])
        p = self.p_values(rows)
        features = np.concatenate([self.varying, self.constant])
        if self.correction == "bh":
            adjusted = benjamini_hochberg(p)
        else:
            adjusted = np.minimum(p * p.shape[0], 1.0)
        hits = features[adjusted <= self.alpha]
        return DriftResult(
            drifted=hits.shape[0] > 0,
            min_p_value=float(adjusted.min()) if adjusted.shape[0] else 1.0,
            n_features_drifted=int(hits.shape[0]),
            window=int(rows.shape[0]),
            n_features_tested=int(p.shape[0]),
            drifted_features=tuple(int(i) for i in sorted(hits)),
        )
