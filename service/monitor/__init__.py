"""Request monitoring: shared rate limits, flood and extraction detection, drift, metrics.

State that must agree across the service's worker processes (token buckets, request
counts, per-subject query histories) lives in one SQLite database in WAL mode,
``$ZTML_HOME/run/monitor.db``; a service scaled out to several replicas shares it in
PostgreSQL instead (give the monitors a ``postgresql://`` URL, ``ZTML_MONITOR_URL``; see
:mod:`service.monitor.postgres`). Input drift is tracked per worker.

Typical use per request (``subject`` = the token's tenant and sub, e.g. ``"demo/alice"``;
``limit`` = the policy's ``rate_limit_per_minute`` for the subject's roles)::

    flood = admit(limiter, flood_detector, subject,    # RateLimited -> 429 + Retry-After
                  rate_per_minute=limit, burst=burst)  # (bucket and window within limit)
    extraction = ExtractionDetector().observe(subject, x)
    facts = monitor_facts(flood, extraction, drift=..., flagged_input=...)
    decision = ...                                     # OPA, with input.monitor = facts
    result = drift_monitor.observe(x)                  # DriftResult every window rows

Create the monitor objects once per worker and reuse them (each keeps one connection).
"""

from service.monitor.admission import admit
from service.monitor.drift import DriftMonitor, DriftResult
from service.monitor.errors import (
    MonitorConfigError,
    MonitorError,
    MonitorInputError,
    MonitorStoreError,
    RateLimited,
)
from service.monitor.extraction import ExtractionDetector, ExtractionSignal
from service.monitor.facts import MonitorSignals, monitor_facts
from service.monitor.flood import FloodDetector, FloodSignal
from service.monitor.ratelimit import RateLimiter, burst_for
from service.monitor.store import default_db_path

__all__ = [
    "DriftMonitor",
    "DriftResult",
    "ExtractionDetector",
    "ExtractionSignal",
    "FloodDetector",
    "FloodSignal",
    "MonitorConfigError",
    "MonitorError",
    "MonitorInputError",
    "MonitorSignals",
    "MonitorStoreError",
    "RateLimited",
    "RateLimiter",
    "admit",
    "burst_for",
    "default_db_path",
    "monitor_facts",
]
