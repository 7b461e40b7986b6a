"""Inputs of ``data.ztml.authz.decision`` for the authorization tests."""

from __future__ import annotations

from typing import Any


def policy_input(**changes: Any) -> dict[str, Any]:
    """An allowed predict request of alice (tenant demo); ``changes`` replace top-level keys."""
    doc: dict[str, Any] = {
        "subject": {
            "sub": "alice",
            "roles": ["predictor"],
            "tenant": "demo",
            "scopes": ["predict"],
        },
        "action": "predict",
        "model": {
            "name": "digits",
            "digest": "sha256:" + "a" * 64,
            "tenant": "demo",
            "risk_tier": "low",
        },
        "request": {"batch_size": 4, "client_address": "127.0.0.1", "time": "2026-11-22T10:00:00Z"},
        "monitor": {
            "rate_per_minute": 1.0,
            "extraction_suspicion": 0.0,
            "extraction_flagged": False,
            "flood": False,
            "drift": False,
            "flagged_input": False,
        },
    }
    doc.update(changes)
    return doc
