"""Ask a real OPA server for each authorization decision (async).

One :class:`OpaAuthorizer` per worker process keeps keep-alive connections to OPA (over
a Unix domain socket or over mutual TLS; :mod:`service.authz.transport`) bound to the
worker's event loop, so a decision is one request on an established connection.
:meth:`OpaAuthorizer.submit` writes the query and returns a :class:`PendingDecision`; the
caller may compute while OPA evaluates, and must not act on anything before the decision
allows. Every failure to get a usable answer (connection refused, timeout, HTTP error,
undefined or malformed decision) raises
:class:`~service.authz.errors.PolicyUnavailableError`: the caller answers 503 and denies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from service.authz.decision import Decision, parse_decision
from service.authz.errors import PolicyUnavailableError
from service.authz.transport import Exchange, HttpResponse, OpaHttp

_log = logging.getLogger(__name__)
DECISION_PACKAGE = "ztml/authz"
DECISION_RULE = "decision"
RATE_LIMIT_RULE = "rate_limit_per_minute"


@dataclass(frozen=True)
class OpaTarget:
    """Where OPA listens: a TCP host and port, or a Unix domain socket.

    Attributes:
        host: TCP host (``localhost`` for a socket: only the Host header uses it).
        port: TCP port.
        https: Whether to speak TLS (TCP only).
        socket_path: The socket's absolute path, or None for TCP.
    """

    host: str
    port: int
    https: bool
    socket_path: str | None = None


def parse_opa_url(url: str) -> OpaTarget:
    """Parse ``http(s)://host:port`` or ``unix:///absolute/path/to/opa.sock``.

    Raises:
        PolicyUnavailableError: the URL has neither form (the message names the fix).
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        path = PurePosixPath(parts.path)
        if parts.netloc or not path.is_absolute() or parts.query or parts.fragment:
            raise PolicyUnavailableError(
                f"OPA URL {url!r} is not unix:///absolute/path (set ZTML_OPA_URL)."
            )
        return OpaTarget(host="localhost", port=80, https=False, socket_path=str(path))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyUnavailableError(
            f"OPA URL {url!r} is not an http(s)://host:port or unix:///path URL (set ZTML_OPA_URL)."
        )
    if parts.path not in ("", "/"):
        raise PolicyUnavailableError(f"OPA URL {url!r} must not have a path.")
    port = parts.port or (443 if parts.scheme == "https" else 8181)
    return OpaTarget(host=parts.hostname, port=port, https=parts.scheme == "https")


class PendingDecision:
    """A decision OPA was asked for; :meth:`decision` waits for (and checks) its answer."""

    def __init__(self, authorizer: OpaAuthorizer, exchange: Exchange, spent: float) -> None:
        self._authorizer = authorizer
        self._exchange = exchange
        self._remaining = authorizer.timeout_seconds - spent
        self._discarded = False

    async def decision(self) -> Decision:
        """Return OPA's decision.

        OPA has the authorizer's timeout for the whole decision, not counting the time
        the caller spent computing between :meth:`OpaAuthorizer.submit` and this call:
        an answer that arrived meanwhile is never refused as late.

        Raises:
            PolicyUnavailableError: no usable decision could be obtained in time.
        """
        authorizer = self._authorizer
        if self._discarded:
            raise PolicyUnavailableError("the decision was discarded before it was read")
        answer = self._exchange.response
        try:
            done, _ = await asyncio.wait((answer,), timeout=max(self._remaining, 0.0))
        except BaseException:  # the caller was cancelled: the query goes with it
            self._exchange.cancel()
            raise
        if not done:
            self._exchange.cancel()
            raise authorizer.timed_out()
        decision = parse_decision(authorizer.result_document(answer))
        if decision.decision_id is None:
            # Decision logging is off on this OPA: tie the audit event to a local id.
            decision = Decision(
                allow=decision.allow,
                reasons=decision.reasons,
                obligations=decision.obligations,
                decision_id=f"local-{uuid.uuid4()}",
            )
        return decision

    def discard(self) -> None:
        """Give up on the answer (the query is cancelled; :meth:`decision` then denies)."""
        self._discarded = True
        self._exchange.cancel()


class OpaAuthorizer:
    """Authorizes model API calls with ``data.ztml.authz.decision`` on an OPA server.

    Args:
        url: the OPA server: ``unix:///run/ztml-opa/opa.sock`` (a Unix domain socket,
            no network hop; who may connect is decided by file permissions) or
            ``http(s)://host:port``.
        timeout_seconds: the whole decision (connect, query, read) must finish in time.
        ssl_context: for an ``https`` OPA with mutual TLS: verifies OPA and presents the
            service's client certificate (see :mod:`service.authz.tls`).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 0.25,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if timeout_seconds <= 0:
            raise PolicyUnavailableError("timeout_seconds must be positive.")
        self.url = url
        self.timeout_seconds = timeout_seconds
        self._target = parse_opa_url(url)
        if ssl_context is not None and not self._target.https:
            raise PolicyUnavailableError(f"OPA URL {url!r} must be https:// with a TLS context.")
        self._ssl_context = ssl_context
        self._client: OpaHttp | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> OpaHttp:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            target = self._target
            self._client = OpaHttp(
                socket_path=target.socket_path,
                host=target.host,
                port=target.port,
                ssl_context=self._tls(),
            )
            self._loop = loop
        return self._client

    def _tls(self) -> ssl.SSLContext | None:
        if not self._target.https:
            return None
        # https without a context of ours: OPA verified against the system's CAs.
        return self._ssl_context or ssl.create_default_context()

    def result_document(self, answer: asyncio.Future[HttpResponse]) -> object:
        """Return the JSON document of a finished query's answer.

        Raises:
            PolicyUnavailableError: the query failed, OPA answered with an error status,
                or the body is not JSON.
        """
        try:
            response = answer.result()
        except Exception as err:  # connection and protocol errors: fail closed
            raise self.unavailable(err) from None
        if response.status != 200:
            raise PolicyUnavailableError(f"OPA at {self.url} answered HTTP {response.status}")
        try:
            return json.loads(response.body)
        except ValueError as err:
            raise self.unavailable(err) from None

    def timed_out(self) -> PolicyUnavailableError:
        """The error for a decision that did not arrive in time."""
        return PolicyUnavailableError(
            f"OPA at {self.url} did not answer within {self.timeout_seconds * 1000:.0f} ms"
        )

    def unavailable(self, err: BaseException) -> PolicyUnavailableError:
        """The error for a decision that could not be obtained."""
        return PolicyUnavailableError(f"OPA at {self.url} is unavailable ({type(err).__name__})")

    async def _send(self, rule: str, input: Mapping[str, Any]) -> Exchange:
        """Write the query of ``data.ztml.authz.<rule>`` for ``input`` to OPA."""
        body = json.dumps({"input": input}, separators=(",", ":")).encode()
        return await self._http().send("POST", f"/v1/data/{DECISION_PACKAGE}/{rule}", body)

    async def submit(self, input: Mapping[str, Any]) -> PendingDecision:
        """Start the query for one call; read the decision later.

        This returns once the whole request has been written to OPA (connecting first
        if no idle connection is open), so the caller may compute while OPA evaluates.
        Connecting is bounded by the query's own timeout. Nothing may be served,
        recorded as served or queued on the strength of the query until
        :meth:`PendingDecision.decision` returned an allowing decision.

        Raises:
            PolicyUnavailableError: OPA cannot be reached, or the query could not be
                sent in time.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                exchange = await self._send(DECISION_RULE, input)
        except TimeoutError:
            raise self.timed_out() from None
        except Exception as err:  # connection and TLS errors: fail closed
            raise self.unavailable(err) from None
        return PendingDecision(self, exchange, spent=loop.time() - started)

    async def decide(self, input: dict[str, Any]) -> Decision:
        """Return OPA's decision for one call.

        Raises:
            PolicyUnavailableError: no usable decision could be obtained in time.
        """
        pending = await self.submit(input)
        return await pending.decision()

    async def rate_limit(self, roles: Sequence[str]) -> int:
        """Return the policy's per-minute rate limit of a subject holding ``roles``.

        The limit depends on the roles alone (``data.ztml.authz.rate_limit_per_minute``
        with only ``input.subject.roles``), so the service asks once per set of roles and
        enforces it before each decision; 0 means no role the policy knows.

        Raises:
            PolicyUnavailableError: no usable answer could be obtained in time.
        """
        try:
            async with asyncio.timeout(self.timeout_seconds):
                exchange = await self._send(RATE_LIMIT_RULE, {"subject": {"roles": list(roles)}})
                try:
                    await asyncio.wait((exchange.response,))
                except BaseException:
                    exchange.cancel()
                    raise
        except TimeoutError:
            raise self.timed_out() from None
        except Exception as err:  # connection and TLS errors: fail closed
            raise self.unavailable(err) from None
        response = self.result_document(exchange.response)
        limit = response.get("result") if isinstance(response, dict) else None
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise PolicyUnavailableError(
                "OPA returned no usable rate limit (data.ztml.authz.rate_limit_per_minute "
                "is not a non-negative integer: are the policies loaded?)"
            )
        return limit

    async def healthy(self) -> bool:
        """Return whether OPA reports healthy with its bundles/policies loaded."""
        try:
            async with asyncio.timeout(max(self.timeout_seconds, 1.0)):
                response = await self._http().request("GET", "/health")
        except Exception:
            return False
        return response.status == 200

    async def close(self) -> None:
        """Close the connections to OPA (safe to call twice)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
