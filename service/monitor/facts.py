"""The ``monitor`` object of the authorization policy input, built from the monitors' signals."""

from __future__ import annotations

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
