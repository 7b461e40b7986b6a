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

import atexit
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, cast

import bentoml

from service.app.config import BENTOML_TIMEOUT_SECONDS, AppConfig, load_config
from service.app.errors import AppError
from service.app.gate import preflight, verify_model
from service.app.header_limit import raise_parser_limit
from service.app.http import HardeningMiddleware, create_api
from service.app.openapi import build_spec
from service.app.tls import bentoml_ssl, check_transport, install, report_refusals_to

_log = logging.getLogger("ztml.service")
# Before any worker accepts a connection: heads over the header limit reach the middleware,
# and TLS connections get the protocol floor, the caller's certificate and refusal reports.
raise_parser_limit()
install()


def _setting(name: str, default: int) -> int:
    try:
        return int(getattr(load_config(), name))
    except AppError:
        return default  # the gate reports the bad value and stops the server


def _ssl_setting() -> dict[str, Any]:
    try:
        return bentoml_ssl(load_config())
    except AppError:
        return {"enabled": False}  # the gate reports the bad value and stops the server


def _refusal_marker(server_pid: int) -> Path:
    from service.toolchain.paths import ztml_home

    return ztml_home() / "run" / f"refused-{server_pid}"


def _exit_non_zero_if_a_worker_refused() -> None:
    """At the server's exit: a worker refused to start, so the server failed (exit 3)."""
    marker = _refusal_marker(os.getpid())
    if marker.exists():
        marker.unlink(missing_ok=True)
        os._exit(3)


def _stop_server_after_refusal() -> None:
    """Stop ``bentoml serve`` from a worker that may not serve (no endless respawns)."""
    server = os.getppid()
    if server <= 1:
        return
    marker = _refusal_marker(server)
    try:
        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        _log.warning("cannot write %s; the server will exit 0", marker)
    os.kill(server, signal.SIGTERM)


def _transport(config: AppConfig) -> str:
    """One line saying how callers reach the service."""
    tls = config.tls
    if tls is None:
        return (
            "serving plain HTTP without TLS (ZTML_INSECURE_PLAIN_HTTP=true): bearer tokens "
            "and inputs cross the network in the clear"
        )
    clients = "no client certificates"
    if tls.client_auth != "off":
        clients = f"client certificates {tls.client_auth}, issuers in {tls.client_ca_file}"
    return f"serving TLS 1.2+ with {tls.cert_file}; {clients}"


def _refuse(err: Exception) -> None:
    reasons = getattr(err, "reasons", ()) or (str(err),)
    line = "ztml: refusing to start: " + "; ".join(str(r) for r in reasons)
    _log.error(line)


def _settle_heap() -> None:
    """Load the OPA client now and keep start-up objects out of the cyclic collector.

    Everything loaded by now (torch, the model, the layers, the OPA client) lives as
    long as the worker. Left to the collector, each full pass walks these ~260k objects
    (about 0.13 s here) while the worker pauses; under load such a pause made OPA
    decisions in flight miss their 250 ms budget, denying those requests with 503.
    """
    import service.authz.transport  # noqa: F401  (imported by the first decision otherwise)

    gc.collect()
    gc.freeze()


@bentoml.service(
    name="ztml-model",
    workers=_setting("workers", 1),
    traffic={"timeout": BENTOML_TIMEOUT_SECONDS},
    ssl=_ssl_setting(),
)
@bentoml.asgi_app(create_api(), path="/")
class ZtmlModelService:
    """Serves the verified digits model through every zero-trust layer."""

    @bentoml.on_deployment
    def gate() -> None:  # a BentoML deployment hook takes no self
        """Run the deploy gate once before any worker starts; exit non-zero on refusal."""
        try:
            config = load_config()
            check_transport(config)
            preflight(config)
            info = verify_model(config)
        except AppError as err:
            _refuse(err)
            raise SystemExit(3) from None
        print(f"ztml: model {info.name} {info.version} ({info.digest}) verified", file=sys.stderr)
        print(f"ztml: {_transport(config)}", file=sys.stderr)
        atexit.register(_exit_non_zero_if_a_worker_refused)

    def __init__(self) -> None:
        from service.app.layers import build_layers
        from service.app.pipeline import Pipeline

        try:
            config = load_config()
            info = verify_model(config)
            layers = build_layers(config, info)
        except Exception as err:  # any layer that cannot start: never serve without it
            _refuse(err)
            _stop_server_after_refusal()
            raise
        self.pipeline = Pipeline(layers)
        plain = config.tls is None
        if plain:
            _log.warning("ztml: WARNING: %s", _transport(config))
        layers.audit.append(
            {
                "kind": "service",
                "request_id": f"start-{os.getpid()}",
                # A start without TLS is recorded as such: tokens cross in the clear.
                "action": "start_insecure_plain_http" if plain else "start",
                "status": 0,
                "client": "local",
                "model_digest": info.digest,
            }
        )
        report_refusals_to(self.pipeline.record_tls_refusal)
        _settle_heap()

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
