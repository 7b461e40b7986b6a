"""Inputs of ``data.ztml.authz.decision`` for the authorization tests, and one decision."""

from __future__ import annotations

import asyncio
from typing import Any

from service.authz import OpaAuthorizer


def decide(url: str, doc: dict[str, Any], timeout: float = 2.0) -> Any:
    """Ask the OPA at ``url`` for one decision with a fresh authorizer."""

    async def run() -> Any:
        authorizer = OpaAuthorizer(url, timeout_seconds=timeout)
        try:
            return await authorizer.decide(doc)
        finally:
            await authorizer.close()

    return asyncio.run(run())


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
            "max_batch": 256,
            "explanations": True,
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
