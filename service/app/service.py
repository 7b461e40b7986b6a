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

from typing import Any, cast

import bentoml

from service.app.config import BENTOML_TIMEOUT_SECONDS, load_config
from service.app.errors import AppError
from service.app.header_limit import raise_parser_limit
from service.app.http import HardeningMiddleware, create_api
from service.app.openapi import build_spec
from service.app.startup import run_deploy_gate, start_pipeline
from service.app.tls import bentoml_ssl, install

# Before any worker accepts a connection: heads over the header limit reach the middleware,
# and TLS connections get the protocol floor, the caller's certificate and refusal reports.
raise_parser_limit()
install()


def _setting(name: str, default: int) -> int:
    try:
        return int(getattr(load_config(), name))
    except AppError:
        return default  # the gate reports the bad value and stops the server


def _served() -> tuple[str | None, Any]:
    """The served model's name and declared contract (None: the built-in digits model).

    Read at import, before the gate runs: the routes and the OpenAPI document name the
    model. A package whose contract cannot be read gets no named routes here; the gate
    then refuses it, naming the problem.
    """
    from service.app.gate import served_name
    from service.model.contract import CONTRACT_NAME, read_contract
    from service.model.errors import ModelError

    try:
        config = load_config()
    except AppError:
        return None, None
    contract = None
    if config.model_path.is_dir() and (config.model_path / CONTRACT_NAME).exists():
        try:
            contract = read_contract(config.model_path / CONTRACT_NAME)
        except ModelError:
            return None, None
    return served_name(config), contract


_NAME, _CONTRACT = _served()


def _ssl_setting() -> dict[str, Any]:
    try:
        return bentoml_ssl(load_config())
    except AppError:
        return {"enabled": False}  # the gate reports the bad value and stops the server


@bentoml.service(
    name="ztml-model",
    workers=_setting("workers", 1),
    traffic={"timeout": BENTOML_TIMEOUT_SECONDS},
    ssl=_ssl_setting(),
)
@bentoml.asgi_app(create_api(_NAME), path="/")
class ZtmlModelService:
    """Serves one verified model through every zero-trust layer.

    The model is a package or the built-in digits model; its routes are
    ``/v1/models/<name>/...`` and the unnamed ``/predict``, ``/explain``, ``/metadata``.
    """

    @bentoml.on_deployment
    def gate() -> None:  # a BentoML deployment hook takes no self
        """Run the deploy gate once before any worker starts; exit non-zero on refusal."""
        run_deploy_gate(load_config)

    def __init__(self) -> None:
        self.pipeline = start_pipeline(load_config)

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
    HardeningMiddleware,
    spec=build_spec(max_batch=_setting("max_batch", 256), contract=_CONTRACT, model_name=_NAME),
    model_name=_NAME,
)
