"""Start-up of a served model: the deploy gate once per server, the layers once per worker.

ztml's own service (:mod:`service.app.service`) and a user's BentoML service wrapped by
:func:`service.app.protect.protect` start the same way:

* :func:`run_deploy_gate` runs in ``bentoml serve``'s main process (a deployment hook)
  before any worker starts; a model the ledger and policy do not vouch for stops the
  server with exit status 3 and one log line naming the reasons.
* :func:`start_pipeline` runs in each worker: it checks again that the file it loads is
  the verified one and builds every layer; when anything fails the worker stops the whole
  server, which then exits 3 instead of respawning the worker forever.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from service.app.config import AppConfig
from service.app.errors import AppError
from service.app.gate import preflight, verify_model
from service.app.tls import check_transport, report_refusals_to

if TYPE_CHECKING:
    from service.app.pipeline import Pipeline

_log = logging.getLogger("ztml.service")
#: Reads the service's configuration (raises :class:`AppError` naming a bad setting).
ConfigLoader = Callable[[], AppConfig]


def refusal_marker(server_pid: int) -> Path:
    """Where a worker that refused to start leaves word for the server ``server_pid``."""
    from service.toolchain.paths import ztml_home

    return ztml_home() / "run" / f"refused-{server_pid}"


def exit_non_zero_if_a_worker_refused() -> None:
    """At the server's exit: a worker refused to start, so the server failed (exit 3)."""
    marker = refusal_marker(os.getpid())
    if marker.exists():
        marker.unlink(missing_ok=True)
        os._exit(3)


def stop_server_after_refusal() -> None:
    """Stop ``bentoml serve`` from a worker that may not serve (no endless respawns)."""
    server = os.getppid()
    if server <= 1:
        return
    marker = refusal_marker(server)
    try:
        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        _log.warning("cannot write %s; the server will exit 0", marker)
    os.kill(server, signal.SIGTERM)


def describe_transport(config: AppConfig) -> str:
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


def refuse(err: Exception) -> None:
    """Log the one ``refusing to start`` line naming every reason of ``err``."""
    reasons = getattr(err, "reasons", ()) or (str(err),)
    line = "ztml: refusing to start: " + "; ".join(str(r) for r in reasons)
    _log.error(line)


def settle_heap() -> None:
    """Load the OPA client now and keep start-up objects out of the cyclic collector.

    Everything loaded by now (torch, the model, the layers, the OPA client) lives as
    long as the worker. Left to the collector, each full pass walks these ~260k objects
    (about 0.13 s here) while the worker pauses; under load such a pause made OPA
    decisions in flight miss their 250 ms budget, denying those requests with 503.
    """
    import service.authz.transport  # noqa: F401  (imported by the first decision otherwise)

    gc.collect()
    gc.freeze()


def run_deploy_gate(load: ConfigLoader) -> None:
    """Run the deploy gate once before any worker starts; exit non-zero on refusal.

    Args:
        load: reads the configuration the workers will read.

    Raises:
        SystemExit: (status 3) the configuration, a prerequisite or the model is refused.
    """
    try:
        config = load()
        check_transport(config)
        preflight(config)
        info = verify_model(config)
    except AppError as err:
        refuse(err)
        raise SystemExit(3) from None
    print(f"ztml: model {info.name} {info.version} ({info.digest}) verified", file=sys.stderr)
    print(f"ztml: {describe_transport(config)}", file=sys.stderr)
    atexit.register(exit_non_zero_if_a_worker_refused)


def start_pipeline(load: ConfigLoader) -> Pipeline:
    """Verify the model again, build this worker's layers and audit the start.

    Args:
        load: reads the configuration (the same the deploy gate read).

    Returns:
        The worker's request path.

    Raises:
        Exception: a layer cannot start; the server has been told to stop (exit 3).
    """
    from service.app.layers import build_layers
    from service.app.pipeline import Pipeline

    try:
        config = load()
        info = verify_model(config)
        layers = build_layers(config, info)
    except Exception as err:  # any layer that cannot start: never serve without it
        refuse(err)
        stop_server_after_refusal()
        raise
    pipeline = Pipeline(layers)
    plain = config.tls is None
    if plain:
        _log.warning("ztml: WARNING: %s", describe_transport(config))
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
    report_refusals_to(pipeline.record_tls_refusal)
    settle_heap()
    return pipeline
