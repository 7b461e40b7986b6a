"""Prometheus metrics of the monitoring layer (all named ``ztml_*``).

BentoML 1.4 serves ``/metrics`` itself. Its serving code gives every worker process the
environment variable ``PROMETHEUS_MULTIPROC_DIR`` before Python starts, and its
``/metrics`` handler builds a fresh registry with
``prometheus_client.multiprocess.MultiProcessCollector`` over that directory (outside
multiprocess mode it renders ``prometheus_client.REGISTRY``). Any metric created with
``prometheus_client`` in a worker therefore appears on BentoML's ``/metrics``, summed over
the workers. ``bentoml.metrics`` is only a deprecated proxy to ``prometheus_client`` that
defers the import, so this module uses ``prometheus_client`` directly, registers on the
default registry, and imports it lazily (on the first :func:`monitor_metrics` call, inside
a worker) so the multiprocess value class is chosen after the variable is set.

Gauges declare how workers combine in multiprocess mode: ``ztml_flood_active`` and
``ztml_drift_detected`` take the maximum over live workers, ``ztml_drift_p_value`` the
minimum (the most alarming worker).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from service.monitor.drift import DriftResult
    from service.monitor.extraction import ExtractionSignal
    from service.monitor.flood import FloodSignal

Outcome = Literal[
    "ok",
    "unauthenticated",
    "rate_limited",
    "denied",
    "invalid_input",
    "flagged",
    "policy_unavailable",
    "error",
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
SUSPICION_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


@dataclass(frozen=True)
class MonitorMetrics:
    """The ``ztml_*`` metrics; create once per process with :func:`monitor_metrics`."""

    requests: Counter
    rate_limited: Counter
    extraction_flagged: Counter
    extraction_suspicion: Histogram
    flood_active: Gauge
    drift_p_value: Gauge
    drift_detected: Gauge
    drift_windows: Counter
    check_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> MonitorMetrics:
        """Create and register the metrics (on the default registry unless given one)."""
        import prometheus_client as prom

        reg = prom.REGISTRY if registry is None else registry
        return cls(
            requests=prom.Counter(
                "ztml_requests",
                "Requests handled by the model service, by outcome.",
                ["outcome"],
                registry=reg,
            ),
            rate_limited=prom.Counter(
                "ztml_rate_limited", "Requests refused by the rate limiter.", registry=reg
            ),
            extraction_flagged=prom.Counter(
                "ztml_extraction_flagged",
                "Requests from subjects the extraction detector flagged.",
                registry=reg,
            ),
            extraction_suspicion=prom.Histogram(
                "ztml_extraction_suspicion",
                "Extraction suspicion of each observed request.",
                buckets=SUSPICION_BUCKETS,
                registry=reg,
            ),
            flood_active=prom.Gauge(
                "ztml_flood_active",
                "1 while the flood detector reports a flood.",
                multiprocess_mode="livemax",
                registry=reg,
            ),
            drift_p_value=prom.Gauge(
                "ztml_drift_p_value",
                "Smallest corrected p-value of the latest drift window.",
                multiprocess_mode="livemin",
                registry=reg,
            ),
            drift_detected=prom.Gauge(
                "ztml_drift_detected",
                "1 if the latest drift window drifted.",
                multiprocess_mode="livemax",
                registry=reg,
            ),
            drift_windows=prom.Counter(
                "ztml_drift_windows",
                "Completed drift windows, by result.",
                ["drifted"],
                registry=reg,
            ),
            check_seconds=prom.Histogram(
                "ztml_monitor_check_seconds",
                "Time spent in each monitor check.",
                ["check"],
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),
        )

    def record_request(self, outcome: Outcome) -> None:
        """Count one finished request."""
        self.requests.labels(outcome=outcome).inc()

    def record_rate_limited(self) -> None:
        """Count one request the rate limiter refused."""
        self.rate_limited.inc()

    def record_extraction(self, signal: ExtractionSignal) -> None:
        """Record an extraction signal (suspicion histogram, flagged counter)."""
        self.extraction_suspicion.observe(signal.suspicion)
        if signal.flagged:
            self.extraction_flagged.inc()

    def record_flood(self, signal: FloodSignal) -> None:
        """Set the flood gauge from the latest flood signal."""
        self.flood_active.set(1 if signal.flood else 0)

    def record_drift(self, result: DriftResult) -> None:
        """Publish a completed drift window."""
        self.drift_p_value.set(result.min_p_value)
        self.drift_detected.set(1 if result.drifted else 0)
        self.drift_windows.labels(drifted="true" if result.drifted else "false").inc()

    def observe_check(self, check: str, seconds: float) -> None:
        """Record how long a monitor check took."""
        self.check_seconds.labels(check=check).observe(seconds)


_lock = threading.Lock()
_metrics: MonitorMetrics | None = None


def monitor_metrics() -> MonitorMetrics:
    """Return this process's metrics on the default registry, creating them once."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = MonitorMetrics.create()
        return _metrics
