"""The ``monitor`` object of the authorization policy input, built from the monitors' signals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.monitor.extraction import ExtractionSignal
from service.monitor.flood import FloodSignal


def monitor_facts(
    flood: FloodSignal,
    extraction: ExtractionSignal | None = None,
    *,
    drift: bool = False,
    flagged_input: bool = False,
) -> dict[str, Any]:
    """Return ``input.monitor`` for ``data.ztml.authz.decision``.

    Args:
        flood: The flood detector's signal for this request.
        extraction: The extraction detector's signal (``None`` before any query was seen:
            suspicion 0, not flagged).
        drift: Whether this worker's latest drift window drifted.
        flagged_input: Whether the sanitizer flagged this request's input.

    Returns:
        ``{"rate_per_minute", "extraction_suspicion", "extraction_flagged", "flood",
        "drift", "flagged_input"}`` with JSON types.
    """
    return {
        "rate_per_minute": float(flood.rate_per_minute),
        "extraction_suspicion": float(extraction.suspicion) if extraction else 0.0,
        "extraction_flagged": bool(extraction.flagged) if extraction else False,
        "flood": bool(flood.flood),
        "drift": bool(drift),
        "flagged_input": bool(flagged_input),
    }


@dataclass(frozen=True)
class MonitorSignals:
    """What the monitors know about one request, for the authorization policy.

    Attributes:
        flood: The flood detector's signal (the request is counted).
        extraction: The extraction detector's signal; None when the request carried no
            queries (metadata, or an input that did not parse).
        drift: Whether this worker's latest drift window drifted.
        flagged_input: Whether the sanitizer flagged this request's input.
    """

    flood: FloodSignal
    extraction: ExtractionSignal | None = None
    drift: bool = False
    flagged_input: bool = False

    def facts(self) -> dict[str, Any]:
        """Return ``input.monitor`` (see :func:`monitor_facts`)."""
        return monitor_facts(
            self.flood, self.extraction, drift=self.drift, flagged_input=self.flagged_input
        )
