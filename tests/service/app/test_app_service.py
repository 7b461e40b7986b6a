"""The BentoML service class's worker start-up (the request path is tested elsewhere)."""

from __future__ import annotations

import gc
import sys


def test_settled_heap_is_frozen_and_the_opa_client_is_loaded() -> None:
    from service.app.startup import settle_heap

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        settle_heap()
        # Start-up objects are out of the collector's full passes (they were what made a
        # worker pause long enough for an OPA decision to time out under load).
        assert gc.get_freeze_count() > 10_000
        assert "service.authz.transport" in sys.modules
    finally:
        gc.unfreeze()
