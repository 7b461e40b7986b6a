"""The HTTP surface: the Starlette routes mounted into BentoML and the hardening middleware.

The routes hand each request to the worker's :class:`~service.app.pipeline.Pipeline`.
:class:`HardeningMiddleware` wraps everything BentoML serves (its own ``/livez``,
``/readyz`` and ``/metrics`` included): it refuses request headers over the size limit
(431, audited; see :mod:`service.app.header_limit`), answers only known routes and
methods, serves the OpenAPI document, rewrites any other error into the stable JSON error
shape, drops the ``server`` header and adds the security headers and a request id.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.app.header_limit import MAX_HEADER_BYTES, header_bytes
from service.app.responses import REQUEST_ID_HEADER, SECURITY_HEADERS, error_body

_log = logging.getLogger(__name__)

#: Route -> allowed methods. Anything else is 404/405 before it reaches BentoML.
ROUTES: dict[str, frozenset[str]] = {
    "/predict": frozenset({"POST"}),
    "/explain": frozenset({"POST"}),
    "/metadata": frozenset({"GET"}),
    "/livez": frozenset({"GET"}),
    "/readyz": frozenset({"GET"}),
    "/healthz": frozenset({"GET"}),
    "/metrics": frozenset({"GET"}),
    "/docs.json": frozenset({"GET"}),
    "/openapi.json": frozenset({"GET"}),
}
SPEC_PATHS = frozenset({"/docs.json", "/openapi.json"})
#: The model API's actions and their methods. Each is served at ``/v1/models/<name>/<action>``
#: (the request names the model) and, for this server's one model, at ``/<action>``.
API_ACTIONS: dict[str, str] = {"predict": "POST", "explain": "POST", "metadata": "GET"}
MODELS_PREFIX = "/v1/models/"
_DROP_HEADERS = frozenset({b"server", b"x-bentoml-request-id", b"x-bentoml-trace-id"})
_MESSAGES = {
    400: ("bad_request", "The request is malformed."),
    404: ("not_found", "No such route."),
    405: ("method_not_allowed", "Method not allowed on this route."),
    413: ("payload_too_large", "The request body is too large."),
    431: (
        "headers_too_large",
        f"The request header fields total more than {MAX_HEADER_BYTES} bytes (counted as "
        "name: value and CRLF per field); send fewer or smaller headers.",
    ),
    500: ("internal_error", "The service failed to answer; try again."),
    503: ("unavailable", "The service is not ready; try again later."),
    504: ("timeout", "The request took too long."),
}


def _pipeline() -> Any:
    import bentoml

    return bentoml.get_current_service().pipeline


async def predict(request: Request) -> Response:
    """``POST /predict``: classify a batch."""
    return await _pipeline().handle(request, "predict")


async def explain(request: Request) -> Response:
    """``POST /explain``: attributions for a batch."""
    return await _pipeline().handle(request, "explain")


async def metadata(request: Request) -> Response:
    """``GET /metadata``: the served model."""
    return await _pipeline().handle(request, "metadata")


def audit_refusal(*, request_id: str, client: str, action: str, status: int) -> None:
    """Audit a request refused before the request path (through the worker's pipeline).

    Raises:
        Exception: the service is not ready or the event cannot be appended.
    """
    _pipeline().record_refusal(request_id=request_id, client=client, action=action, status=status)


#: How a refused request is audited: keyword arguments request_id, client, action, status.
RefusalAuditor = Callable[..., None]


def model_path(name: str, action: str) -> str:
    """The route of ``action`` on the model ``name``: ``/v1/models/<name>/<action>``."""
    return f"{MODELS_PREFIX}{name}/{action}"


def served_routes(model_name: str | None) -> dict[str, frozenset[str]]:
    """Every route of a server of ``model_name``, with its methods."""
    routes = dict(ROUTES)
    if model_name:
        routes |= {model_path(model_name, a): frozenset({m}) for a, m in API_ACTIONS.items()}
    return routes


def _action(path: str, routes: dict[str, frozenset[str]] = ROUTES) -> str:
    """The audited action of a path: its route's name, never the raw (client-chosen) path."""
    if path not in routes:
        return "unknown_route"
    return path.rsplit("/", 1)[-1]


def create_api(model_name: str | None = None) -> Starlette:
    """Return the Starlette app of the model API routes.

    Args:
        model_name: The served model's name: its routes ``/v1/models/<name>/...`` are
            added to the unnamed ``/predict``, ``/explain`` and ``/metadata``.
    """
    handlers = {"predict": predict, "explain": explain, "metadata": metadata}
    routes = [Route(f"/{a}", handlers[a], methods=[m]) for a, m in API_ACTIONS.items()]
    if model_name:
        routes += [
            Route(model_path(model_name, a), handlers[a], methods=[m])
            for a, m in API_ACTIONS.items()
        ]
    return Starlette(routes=routes)


def _error_message(status: int, request_id: str) -> bytes:
    code, message = _MESSAGES.get(
        status, ("client_error" if status < 500 else "server_error", "The request failed.")
    )
    return json.dumps(error_body(code, message, request_id)).encode()


class HardeningMiddleware:
    """Pure ASGI middleware applying the service's HTTP hygiene to every response.

    Args:
        app: the wrapped ASGI app (BentoML's).
        spec: the OpenAPI document to serve at ``/docs.json`` and ``/openapi.json``.
        max_header_bytes: the largest accepted header size (as
            :func:`~service.app.header_limit.header_bytes` counts it).
        auditor: audits a request refused here (default: the worker's pipeline).
        model_name: The served model's name (its ``/v1/models/<name>/...`` routes); a
            request naming another model gets 404 ``unknown_model``.
    """

    def __init__(
        self,
        app: ASGIApp,
        spec: dict[str, Any] | None = None,
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        auditor: RefusalAuditor = audit_refusal,
        model_name: str | None = None,
    ) -> None:
        self.app = app
        self.model_name = model_name
        self.routes = served_routes(model_name)
        self._spec = json.dumps(spec or {}).encode()
        self.max_header_bytes = max_header_bytes
        self._auditor = auditor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI event."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        request_id = uuid.uuid4().hex
        if header_bytes(scope.get("headers", ())) > self.max_header_bytes:
            await self._refuse_headers(scope, send, request_id)
            return
        allowed = self.routes.get(path)
        if allowed is None:
            if path.startswith(MODELS_PREFIX):
                await self._unknown_model(send, request_id)
            else:
                await self._reply(send, 404, request_id)
            return
        if method not in allowed and not (method == "HEAD" and "GET" in allowed):
            await self._reply(
                send, 405, request_id, extra=[(b"allow", ", ".join(sorted(allowed)).encode())]
            )
            return
        if path in SPEC_PATHS:
            await self._send(send, 200, self._spec, request_id, b"application/json")
            return
        await self.app(scope, receive, self._wrap(send, request_id))

    async def _refuse_headers(self, scope: Scope, send: Send, request_id: str) -> None:
        """Answer 431 and audit it; 503 when it cannot be audited (never unaudited)."""
        client = scope.get("client")
        try:
            self._auditor(
                request_id=request_id,
                client=str(client[0]) if client else "unknown",
                action=_action(scope.get("path", ""), self.routes),
                status=431,
            )
        except Exception:
            _log.exception("audit append failed for refused request %s", request_id)
            body = error_body(
                "audit_unavailable", "The audit log is unavailable; try later.", request_id
            )
            await self._send(send, 503, json.dumps(body).encode(), request_id, b"application/json")
            return
        await self._reply(send, 431, request_id)

    async def _unknown_model(self, send: Send, request_id: str) -> None:
        """404 for a route naming a model this server does not serve (never echoing it)."""
        served = f"model {self.model_name!r}" if self.model_name else "no named model"
        body = error_body(
            "unknown_model",
            f"This service serves {served}; call {MODELS_PREFIX}<name>/predict with the "
            "name of a model it serves (GET /openapi.json lists its routes).",
            request_id,
        )
        await self._send(send, 404, json.dumps(body).encode(), request_id, b"application/json")

    def _wrap(self, send: Send, request_id: str) -> Send:
        state: dict[str, Any] = {"rewrite": False}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in _DROP_HEADERS
                ]
                names = {k.lower() for k, _ in headers}
                status = int(message["status"])
                ours = REQUEST_ID_HEADER.encode() in names
                if status >= 400 and not ours:
                    # An error BentoML or Starlette produced: replace its body.
                    state["rewrite"] = True
                    state["status"] = status
                    state["headers"] = [
                        (k, v)
                        for k, v in headers
                        if k.lower() in (b"retry-after", b"allow", b"www-authenticate")
                    ]
                    return
                if not ours:
                    headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                headers += [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.encode() not in names
                ]
                await send({**message, "headers": headers})
                return
            if state["rewrite"]:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    await self._send(
                        send,
                        state["status"],
                        _error_message(state["status"], request_id),
                        request_id,
                        b"application/json",
                        extra=state["headers"],
                    )
                return
            await send(message)

        return wrapped

    async def _reply(
        self,
        send: Send,
        status: int,
        request_id: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await self._send(
            send,
            status,
            _error_message(status, request_id),
            request_id,
            b"application/json",
            extra=extra,
        )

    @staticmethod
    async def _send(
        send: Send,
        status: int,
        body: bytes,
        request_id: str,
        content_type: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER.encode(), request_id.encode()),
            *[(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()],
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
