"""Errors raised by the request monitors (rate limits, abuse detectors, drift)."""

from __future__ import annotations

import math


class MonitorError(Exception):
    """Base error for monitoring."""


class RateLimited(MonitorError):
    """The subject has used up its request budget; the service answers 429.

    Attributes:
        retry_after_seconds: When the next request will be admitted (the ``Retry-After``
            header, rounded up to whole seconds by :meth:`retry_after_header`).
    """

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after_seconds:.1f} s")
        self.retry_after_seconds = retry_after_seconds

    def retry_after_header(self) -> str:
        """Return the ``Retry-After`` header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(self.retry_after_seconds)))


class MonitorStoreError(MonitorError):
    """The shared monitor database cannot be opened or written; the service fails closed."""


class MonitorConfigError(MonitorError):
    """A monitor was configured with an impossible limit, window or threshold."""


class MonitorInputError(MonitorError):
    """A monitor was given data of the wrong shape or with non-finite values."""
