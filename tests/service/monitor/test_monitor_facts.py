"""The monitor facts handed to the authorization policy."""

from __future__ import annotations

import json

from service.monitor import ExtractionSignal, FloodSignal, MonitorSignals, monitor_facts


def test_facts_carry_every_signal() -> None:
    facts = monitor_facts(
        FloodSignal(rate_per_minute=12, flood=False),
        ExtractionSignal(suspicion=0.7, flagged=True),
        drift=True,
        flagged_input=True,
    )
    assert facts == {
        "rate_per_minute": 12.0,
        "extraction_suspicion": 0.7,
        "extraction_flagged": True,
        "flood": False,
        "drift": True,
        "flagged_input": True,
    }


def test_facts_without_extraction_signal_are_not_suspicious() -> None:
    facts = monitor_facts(FloodSignal(rate_per_minute=1, flood=True))
    assert facts["extraction_suspicion"] == 0.0
    assert facts["extraction_flagged"] is False
    assert facts["flood"] is True


def test_facts_are_plain_json() -> None:
    import numpy as np

    signal = ExtractionSignal(suspicion=float(np.float32(0.25)), flagged=bool(np.bool_(False)))
    json.dumps(
        monitor_facts(FloodSignal(rate_per_minute=float(np.float64(3)), flood=False), signal)
    )


def test_signals_give_the_facts_of_their_values() -> None:
    flood = FloodSignal(rate_per_minute=5, flood=False)
    extraction = ExtractionSignal(suspicion=0.2, flagged=False)
    signals = MonitorSignals(flood=flood, extraction=extraction, drift=True)
    assert signals.facts() == monitor_facts(flood, extraction, drift=True, flagged_input=False)
    assert MonitorSignals(flood=flood).facts() == monitor_facts(flood)
