"""Request monitoring: shared rate limits, flood and extraction detection, drift, metrics.

State that must agree across the service's worker processes (token buckets, request
counts, per-subject query histories) lives in one SQLite database in WAL mode,
``$ZTML_HOME/run/monitor.db``; input drift is tracked per worker.
"""

from service.monitor.drift import DriftMonitor, DriftResult
from service.monitor.errors import (
    MonitorConfigError,
    MonitorError,
    MonitorInputError,
    MonitorStoreError,
    RateLimited,
)
from service.monitor.extraction import ExtractionDetector, ExtractionSignal
from service.monitor.facts import monitor_facts
from service.monitor.flood import FloodDetector, FloodSignal
from service.monitor.ratelimit import RateLimiter
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
    "MonitorStoreError",
    "RateLimited",
    "RateLimiter",
    "default_db_path",
    "monitor_facts",
]
