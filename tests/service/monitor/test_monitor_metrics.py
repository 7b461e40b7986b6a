"""Prometheus metrics: names, values, and visibility in multiprocess mode (as BentoML runs)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.monitor.drift import DriftResult
from service.monitor.extraction import ExtractionSignal
from service.monitor.flood import FloodSignal
from service.monitor.metrics import MonitorMetrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> MonitorMetrics:
    return MonitorMetrics.create(registry)


def test_all_metrics_are_named_ztml(registry: CollectorRegistry, metrics: MonitorMetrics) -> None:
    names = {family.name for family in registry.collect()}
    assert names
    assert all(name.startswith("ztml_") for name in names)


def test_requests_are_counted_by_outcome(
    registry: CollectorRegistry, metrics: MonitorMetrics
) -> None:
    metrics.record_request("ok")
    metrics.record_request("ok")
    metrics.record_request("rate_limited")
    assert registry.get_sample_value("ztml_requests_total", {"outcome": "ok"}) == 2
    assert registry.get_sample_value("ztml_requests_total", {"outcome": "rate_limited"}) == 1


def test_rate_limited_and_extraction_counters(
    registry: CollectorRegistry, metrics: MonitorMetrics
) -> None:
    metrics.record_rate_limited()
    metrics.record_extraction(ExtractionSignal(suspicion=0.9, flagged=True))
    metrics.record_extraction(ExtractionSignal(suspicion=0.1, flagged=False))
    assert registry.get_sample_value("ztml_rate_limited_total") == 1
    assert registry.get_sample_value("ztml_extraction_flagged_total") == 1
    assert registry.get_sample_value("ztml_extraction_suspicion_count") == 2


def test_flood_gauge_follows_the_signal(
    registry: CollectorRegistry, metrics: MonitorMetrics
) -> None:
    metrics.record_flood(FloodSignal(rate_per_minute=5000, flood=True))
    assert registry.get_sample_value("ztml_flood_active") == 1
    metrics.record_flood(FloodSignal(rate_per_minute=5, flood=False))
    assert registry.get_sample_value("ztml_flood_active") == 0


def test_drift_gauges_and_window_counter(
    registry: CollectorRegistry, metrics: MonitorMetrics
) -> None:
    metrics.record_drift(
        DriftResult(drifted=True, min_p_value=1e-9, n_features_drifted=3, window=200)
    )
    assert registry.get_sample_value("ztml_drift_detected") == 1
    assert registry.get_sample_value("ztml_drift_p_value") == pytest.approx(1e-9)
    assert registry.get_sample_value("ztml_drift_windows_total", {"drifted": "true"}) == 1


def test_check_latency_histogram(registry: CollectorRegistry, metrics: MonitorMetrics) -> None:
    metrics.observe_check("rate_limit", 0.0002)
    assert registry.get_sample_value("ztml_monitor_check_seconds_count", {"check": "rate_limit"})


WORKER = textwrap.dedent(
    """
    from service.monitor.flood import FloodSignal
    from service.monitor.metrics import monitor_metrics

    m = monitor_metrics()
    assert m is monitor_metrics()
    m.record_request("ok")
    m.record_flood(FloodSignal(rate_per_minute=9000, flood=True))
    """
)


def test_worker_metrics_reach_the_multiprocess_collector(tmp_path: Path) -> None:
    """Two worker processes record; the collector BentoML's /metrics uses sums them."""
    from prometheus_client.multiprocess import MultiProcessCollector

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(root)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", WORKER], check=True, env=env, cwd=root, timeout=120)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("ztml_requests_total", {"outcome": "ok"}) == 2
