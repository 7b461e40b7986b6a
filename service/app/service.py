"""The hardened BentoML model service: ``bentoml serve service.app.service:ZtmlModelService``.

The class is thin: configuration (:mod:`service.app.config`), the deploy gate
(:mod:`service.app.gate`), the layers (:mod:`service.app.layers`), the request path
(:mod:`service.app.pipeline`) and the HTTP surface (:mod:`service.app.http`) live in
their own modules.

Start-up refuses a model the provenance ledger and policy do not vouch for:
``bentoml serve`` runs the gate once in its main process (``on_deployment``) and exits
non-zero with one log line naming the reasons; each worker then checks again that the
file it loads is the verified one.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any, cast

import bentoml

from service.app.config import load_config
from service.app.errors import AppError
from service.app.gate import verify_model
from service.app.http import HardeningMiddleware, create_api
from service.app.openapi import build_spec

_log = logging.getLogger("ztml.service")


def _setting(name: str, default: int) -> int:
    try:
        return int(getattr(load_config(), name))
    except AppError:
        return default  # the gate reports the bad value and stops the server


def _refuse(err: Exception) -> None:
    reasons = getattr(err, "reasons", ()) or (str(err),)
    line = "ztml: refusing to start: " + "; ".join(str(r) for r in reasons)
    _log.error(line)
    print(line, file=sys.stderr, flush=True)


@bentoml.service(
    name="ztml-model",
    workers=_setting("workers", 1),
    traffic={"timeout": 30},
)
@bentoml.asgi_app(create_api(), path="/")
class ZtmlModelService:
    """Serves the verified digits model through every zero-trust layer."""

    @bentoml.on_deployment
    def gate() -> None:  # a BentoML deployment hook takes no self
        """Run the deploy gate once before any worker starts; exit non-zero on refusal."""
        try:
            info = verify_model(load_config())
        except AppError as err:
            _refuse(err)
            raise SystemExit(3) from None
        print(f"ztml: model {info.name} {info.version} ({info.digest}) verified", file=sys.stderr)

    def __init__(self) -> None:
        from service.app.layers import build_layers
        from service.app.pipeline import Pipeline

        try:
            config = load_config()
            info = verify_model(config)
            layers = build_layers(config, info)
        except AppError as err:
            _refuse(err)
            # A worker that may not serve must not be respawned forever: stop the server.
            if os.getppid() > 1:
                os.kill(os.getppid(), signal.SIGTERM)
            raise
        self.pipeline = Pipeline(layers)
        layers.audit.append(
            {
                "kind": "service",
                "request_id": f"start-{os.getpid()}",
                "action": "start",
                "status": 0,
                "client": "local",
                "model_digest": info.digest,
            }
        )

    def __is_ready__(self) -> bool:
        """Ready once the verified model and every layer are loaded."""
        return hasattr(self, "pipeline")

    @bentoml.on_shutdown
    async def shutdown(self) -> None:
        """Close the OPA session and write the audit chain's final checkpoint."""
        pipeline = getattr(self, "pipeline", None)
        if pipeline is None:
            return
        await pipeline.layers.authorizer.close()
        pipeline.layers.close()


cast(Any, ZtmlModelService).add_asgi_middleware(
    HardeningMiddleware, spec=build_spec(max_batch=_setting("max_batch", 256))
)
