"""Put ztml's request path in front of an existing BentoML service: one decorator.

A user's ``@bentoml.service`` class, with its own ``@bentoml.api`` methods and its own
model, is protected by one added line::

    from service.app.protect import protect

    @protect(model_dir="/srv/models/digits")
    @bentoml.service
    class Classifier:
        @bentoml.api
        def predict(self, instances: list[list[float]]) -> list[int]: ...

Every POST to one of the service's API routes then goes through authn (JWT) -> monitor
(rate limit, flood, extraction) -> authz (OPA) -> sanitize -> screening by the verified
model -> review and drift -> **the user's own API method** -> audit, and fails in ztml's
stable JSON error shape (401, 403, 422 naming the field, 429, 503), each request audited.
The user's method runs exactly as BentoML would run it (its input validation, its own
pre- and post-processing, sync or async); its response body is sent back unchanged.
BentoML's other routes (``/healthz``, ``/readyz``, ``/livez``, ``/metrics``, the docs)
are left as they were.

How it works, and why this way: :func:`protect` takes the :class:`bentoml.Service` the
user's decorator made and

* adds :class:`ProtectMiddleware` with ``add_asgi_middleware`` (BentoML's own extension
  point): it intercepts POSTs to the API routes, hands them to the worker's
  :class:`~service.app.pipeline.Pipeline`, and answers an allowed, sanitized request by
  passing the (already read) body on to BentoML's route, that is to the user's method.
  Forwarding to BentoML's route rather than calling the method itself keeps BentoML's
  input conversion, thread pool and response encoding, so nothing of the user's API
  changes and ztml need not imitate BentoML;
* adds a deployment hook running ztml's deploy gate (:func:`~service.app.startup.run_deploy_gate`)
  in ``bentoml serve``'s main process: an unregistered, unapproved, revoked or tampered
  model stops the server with exit status 3 before any worker starts;
* wraps the class's ``__init__`` so each worker builds ztml's layers
  (:func:`~service.app.startup.start_pipeline`, which checks the model file again) before
  the user's own ``__init__`` runs, and adds a shutdown hook closing them.

Nothing else of the user's class changes. The configuration is ztml's (``ZTML_*``
variables, see :mod:`service.app.config`), with ``model_dir`` as the model unless
``ZTML_MODEL_PATH`` names it (both set and different: the server refuses to start).
Every protected API takes its batch as ``instances`` (ztml's wire format, validated
against the model's bounds); a body with any other field is refused with 422 naming it.
The user's method should load its model from the same ``model_dir``: ztml verifies those
files, and screens each input with the verified weights, but cannot see what else the
method loads. Task and streaming APIs are not supported (refused when decorating).
Unlike ztml's own service, headers over ztml's size limit are cut off by uvicorn's parser
(its default limit, left as it is) rather than answered with an audited 431.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.app.config import AppConfig, load_config
from service.app.errors import AppError, ConfigError
from service.app.responses import (
    REQUEST_ID_HEADER,
    SECURITY_HEADERS,
    ApiError,
    error_response,
    internal_error,
)
from service.app.startup import run_deploy_gate, start_pipeline
from service.app.tls import bentoml_ssl, install

if TYPE_CHECKING:
    from service.app.pipeline import Pipeline

_log = logging.getLogger("ztml.service")
T = TypeVar("T")
#: The field of a protected API's body holding the batch (ztml's wire format).
INSTANCES = "instances"
#: The model file of a directory without a ztml-model.json (the built-in digits model).
_DIGITS_WEIGHTS = "model.safetensors"
_CONTRACT = "ztml-model.json"
#: BentoML's headers that name its internals; never passed on.
_DROP_HEADERS = frozenset(
    {b"server", b"content-length", b"x-bentoml-request-id", b"x-bentoml-trace-id"}
)
#: The most of an API's own error message a 4xx answer quotes.
_MAX_QUOTED = 300


class ProtectError(TypeError):
    """``protect`` cannot wrap what it was given (the message says what to change)."""


def model_artifact(model_dir: Path) -> Path:
    """Return what the deploy gate verifies for ``model_dir``.

    A model package (a directory with ``ztml-model.json``) is verified as the directory;
    a directory without one holds the built-in digits model, whose weights file is the
    artifact; a file is taken as it is.
    """
    if model_dir.is_dir() and not (model_dir / _CONTRACT).exists():
        return model_dir / _DIGITS_WEIGHTS
    return model_dir


def config_loader(model_dir: str | os.PathLike[str] | None) -> Callable[[], AppConfig]:
    """Return a loader of the service's configuration with ``model_dir`` as its model.

    Raises (when called):
        ConfigError: ``ZTML_MODEL_PATH`` names another model than ``model_dir``.
    """
    wanted = None if model_dir is None else model_artifact(Path(model_dir).expanduser())

    def load() -> AppConfig:
        env = dict(os.environ)
        if wanted is not None:
            configured = env.get("ZTML_MODEL_PATH")
            if configured and model_artifact(Path(configured).expanduser()).resolve() != (
                wanted.resolve()
            ):
                raise ConfigError(
                    f"ZTML_MODEL_PATH={configured} names another model than "
                    f"protect(model_dir={str(model_dir)!r}); unset one of them."
                )
            env["ZTML_MODEL_PATH"] = str(wanted)
        return load_config(env)

    return load


@dataclass
class Protection:
    """What a protected service's parts share within one process.

    Attributes:
        load: reads the configuration (with the decorator's model).
        routes: the protected API routes (paths).
        pipeline: this worker's request path, once its layers are built.
    """

    load: Callable[[], AppConfig]
    routes: frozenset[str]
    pipeline: Pipeline | None = field(default=None)


class ProtectMiddleware:
    """ASGI middleware serving the protected API routes through the worker's pipeline.

    Args:
        app: the rest of BentoML's app (its routes, the user's API methods).
        protection: the service's shared state (routes, the worker's pipeline).
    """

    def __init__(self, app: ASGIApp, *, protection: Protection) -> None:
        self.app = app
        self.protection = protection

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI event: a protected route through the pipeline, others as before."""
        if (
            scope["type"] != "http"
            or _route_path(scope) not in self.protection.routes
            or scope.get("method") != "POST"
        ):
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        pipeline = self.protection.pipeline
        if pipeline is None:  # no worker answers before its layers are built; never unguarded
            unavailable = ApiError(503, "unavailable", "The service is not ready; try later.")
            await error_response(unavailable, "none")(scope, receive, send)
            return
        request = Request(scope, receive)
        infer = functools.partial(self._call_api, scope, receive)
        response = await pipeline.handle(request, "predict", infer=infer)
        await response(scope, receive, send)

    async def _call_api(
        self, scope: Scope, receive: Receive, body: bytes, request_id: str
    ) -> Response:
        """Pass the allowed body on to BentoML's route (the user's method); return its answer.

        Raises:
            ApiError: the method failed (500) or its API refused the input (its status).
        """
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the body is read: only a disconnect can follow

        answer: dict[str, Any] = {"status": 500, "headers": [], "body": []}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = int(message["status"])
                answer["headers"] = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                answer["body"].append(message.get("body", b""))

        await self.app(scope, replay, capture)
        status, content = answer["status"], b"".join(answer["body"])
        if status >= 500:
            _log.error("request %s: the API method failed with %d", request_id, status)
            raise internal_error()
        if status >= 400:
            quoted = content.decode("utf-8", "replace")[:_MAX_QUOTED]
            raise ApiError(status, "rejected_by_api", f"The service's API refused it: {quoted}")
        response = Response(content, status_code=status)
        kept = [(k, v) for k, v in answer["headers"] if k.lower() not in _DROP_HEADERS]
        response.raw_headers = [*kept, (b"content-length", str(len(content)).encode())]
        response.headers[REQUEST_ID_HEADER] = request_id
        return response


def _route_path(scope: Scope) -> str:
    """The path BentoML's router matches (the path without the server's root path)."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def _with_security_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
            names = {k.lower() for k, _ in headers}
            headers += [
                (k.encode(), v.encode())
                for k, v in SECURITY_HEADERS.items()
                if k.encode() not in names
            ]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _protected_routes(service: Any) -> frozenset[str]:
    """The API routes of ``service``, refusing an API ztml cannot guard."""
    routes = set()
    for name, api in service.apis.items():
        where = f"{service.inner.__name__}.{name}"
        if api.is_task or api.is_stream:
            raise ProtectError(
                f"{where}: task and streaming APIs cannot be protected; make it a plain "
                "@bentoml.api returning its whole answer."
            )
        fields = getattr(api.input_spec, "model_fields", {})
        if INSTANCES not in fields or len(fields) != 1:
            raise ProtectError(
                f"{where}: a protected API takes exactly one argument, the batch, named "
                f"{INSTANCES!r} (it has {sorted(fields)}); rename it, e.g. "
                f"def {name}(self, {INSTANCES}: list[list[float]])."
            )
        routes.add(api.route)
    if not routes:
        raise ProtectError(f"{service.inner.__name__} has no @bentoml.api method to protect.")
    return frozenset(routes)


def _apply_transport(service: Any, load: Callable[[], AppConfig]) -> None:
    """Serve TLS as the ``ZTML_TLS_*`` settings say (the gate checks the same settings)."""
    if service.config.get("ssl", {}).get("enabled"):
        raise ProtectError(
            f"{service.inner.__name__}: configure TLS with ZTML_TLS_CERT_FILE and "
            "ZTML_TLS_KEY_FILE (checked by the deploy gate), not @bentoml.service(ssl=...)."
        )
    # A bad setting is left to the deploy gate, which reports it and stops the server.
    with contextlib.suppress(AppError):
        service.config["ssl"] = bentoml_ssl(load())


def protect(
    model_dir: str | os.PathLike[str] | None = None,
) -> Callable[[T], T]:
    """Serve a BentoML service's API routes through ztml's whole request path.

    Put it above ``@bentoml.service``; see the module description for what it does.

    Args:
        model_dir: the registered and approved model (its package directory, or the
            built-in digits model's directory or weights file). Default:
            ``ZTML_MODEL_PATH``.

    Returns:
        A decorator returning the same service, protected.

    Raises:
        ProtectError: (when decorating) the target is not a BentoML service, or one of
            its APIs cannot be protected; the message names it and the fix.
    """

    def decorate(service: T) -> T:
        import bentoml

        if not isinstance(service, bentoml.Service):
            raise ProtectError(
                f"protect() wraps a BentoML service, got {service!r}: put @protect(...) "
                "above @bentoml.service."
            )
        svc: Any = service
        inner = svc.inner
        if getattr(inner, "_ztml_protection", None) is not None:
            raise ProtectError(f"{inner.__name__} is already protected.")
        install()  # TLS protocol floor and the caller's certificate, in every process
        load = config_loader(model_dir)
        protection = Protection(load=load, routes=_protected_routes(svc))
        _apply_transport(svc, load)

        def gate() -> None:
            run_deploy_gate(load)

        gate.__bentoml_deployment_hook__ = True  # type: ignore[attr-defined]
        user_init = inner.__init__

        @functools.wraps(user_init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            protection.pipeline = start_pipeline(load)
            user_init(self, *args, **kwargs)

        async def shutdown(self: Any) -> None:
            pipeline = protection.pipeline
            if pipeline is not None:
                await pipeline.layers.authorizer.close()
                pipeline.layers.close()

        shutdown.__bentoml_shutdown_hook__ = True  # type: ignore[attr-defined]
        inner._ztml_protection = protection
        inner._ztml_deploy_gate = staticmethod(gate)
        inner._ztml_shutdown = shutdown
        inner.__init__ = __init__
        svc.add_asgi_middleware(ProtectMiddleware, protection=protection)
        return service

    return decorate
