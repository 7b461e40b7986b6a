"""Feeding the worker's drift monitor off the request path.

A full window runs per-feature KS tests (tens of ms); they run in a thread so neither the
response that completed the window nor other requests wait for them. The drift fact
reaches the policy for later requests (:attr:`DriftFeed.drifted`); a drift is reported to
the caller's ``on_drift`` (the service audits it as its own event).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from service.monitor import DriftMonitor
from service.monitor.metrics import MonitorMetrics

_log = logging.getLogger(__name__)


class DriftFeed:
    """Buffers sanitized inputs and tests each whole window in a background thread.

    Args:
        monitor: The worker's drift monitor.
        lock: Held while the monitor tests (one test at a time).
        window: Rows per test (the monitor's window).
        metrics: Where each test's result is recorded.
    """

    def __init__(
        self,
        monitor: DriftMonitor,
        lock: threading.Lock,
        *,
        window: int,
        metrics: MonitorMetrics,
    ) -> None:
        self.monitor = monitor
        self.lock = lock
        self.window = window
        self.metrics = metrics
        #: Whether the latest tested window drifted (the policy's ``drift`` fact).
        self.drifted = False
        self._rows: list[npt.NDArray[np.float32]] = []
        self._count = 0
        self._background: set[asyncio.Task[None]] = set()

    def add(
        self, x: npt.NDArray[np.float32], *, request_id: str, on_drift: Callable[[], object]
    ) -> None:
        """Buffer ``x``; once a window is full, test it in the background.

        Args:
            x: A served batch, shape (N, 64).
            request_id: The request that completed the window (named if the test fails).
            on_drift: Called (in the test's thread) when the window drifted.
        """
        self._rows.append(x)
        self._count += x.shape[0]
        if self._count < self.window:
            return  # buffered; the monitor gets whole windows
        rows = np.concatenate(self._rows)
        self._rows, self._count = [], 0
        task = asyncio.create_task(asyncio.to_thread(self._test, rows, request_id, on_drift))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _test(
        self, x: npt.NDArray[np.float32], request_id: str, on_drift: Callable[[], object]
    ) -> None:
        try:
            with self.lock:
                result = self.monitor.observe(x)
            if result is None:
                return
            self.drifted = bool(result.drifted)
            self.metrics.record_drift(result)
            if self.drifted:
                on_drift()
        except Exception:  # a monitoring failure must not go unnoticed, nor kill the loop
            _log.exception("drift monitoring failed for request %s", request_id)
