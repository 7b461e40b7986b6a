"""Ask a real OPA server for each authorization decision (async, keep-alive, mutual TLS).

One :class:`OpaAuthorizer` per worker process keeps its connections to OPA open
(:mod:`service.authz.transport`), bound to the worker's event loop, so a decision is one
request on an established (TLS) connection. :meth:`OpaAuthorizer.submit` writes the query
at once and returns a :class:`PendingDecision` whose answer is read later: the caller may
compute while OPA evaluates, and must not act on anything before the decision allows.
Every failure to get a usable answer (connection refused, timeout, HTTP error, undefined
or malformed decision) raises :class:`~service.authz.errors.PolicyUnavailableError`: the
caller answers 503 and denies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from typing import Any
from urllib.parse import urlsplit

from service.authz.decision import Decision, parse_decision
from service.authz.errors import PolicyUnavailableError
from service.authz.transport import Exchange, OpaTransport

_log = logging.getLogger(__name__)
DECISION_PATH = "/v1/data/ztml/authz/decision"


def _split_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyUnavailableError(
            f"OPA URL {url!r} is not an http(s)://host:port URL (set ZTML_OPA_URL)."
        )
    if parts.path not in ("", "/"):
        raise PolicyUnavailableError(f"OPA URL {url!r} must not have a path.")
    port = parts.port or (443 if parts.scheme == "https" else 8181)
    return parts.hostname, port, parts.scheme == "https"


class PendingDecision:
    """A decision OPA was asked for; :meth:`decision` reads (and checks) its answer."""

    def __init__(self, authorizer: OpaAuthorizer, exchange: Exchange, deadline: float) -> None:
        self._authorizer = authorizer
        self._exchange = exchange
        self._deadline = deadline
        self._sent = asyncio.get_running_loop().time()

    async def decision(self) -> Decision:
        """Return OPA's decision.

        OPA has the authorizer's timeout for the whole decision (connect, query, read),
        not counting the time the caller spent computing between :meth:`OpaAuthorizer.submit`
        and this call: an answer that arrived meanwhile is never refused as late.

        Raises:
            PolicyUnavailableError: no usable decision could be obtained in time.
        """
        authorizer = self._authorizer
        loop = asyncio.get_running_loop()
        deadline = self._deadline + (loop.time() - self._sent)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._exchange.response()
        except TimeoutError:
            raise authorizer.timed_out() from None
        except Exception as err:  # connection, framing and TLS errors: fail closed
            raise authorizer.unavailable(err) from None
        if response.status != 200:
            raise PolicyUnavailableError(f"OPA at {authorizer.url} answered HTTP {response.status}")
        try:
            document = json.loads(response.body)
        except ValueError:
            raise PolicyUnavailableError(f"OPA at {authorizer.url} answered invalid JSON") from None
        decision = parse_decision(document)
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
        """Give up on the answer (its connection is closed, never reused)."""
        self._exchange.discard()


class OpaAuthorizer:
    """Authorizes model API calls with ``data.ztml.authz.decision`` on an OPA server.

    Args:
        url: the OPA server, e.g. ``http://127.0.0.1:8181``.
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
        self._host, self._port, self._ssl = _split_url(url)
        if ssl_context is not None and not self._ssl:
            raise PolicyUnavailableError(f"OPA URL {url!r} must be https:// with a TLS context.")
        if ssl_context is None and self._ssl:
            ssl_context = ssl.create_default_context()
        self._ssl_context = ssl_context
        self._transport: OpaTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def transport(self) -> OpaTransport:
        """The connections of the current event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        if self._transport is None or self._loop is not loop:
            if self._transport is not None:
                self._transport.abandon()
            self._transport = OpaTransport(self._host, self._port, ssl_context=self._ssl_context)
            self._loop = loop
        return self._transport

    def timed_out(self) -> PolicyUnavailableError:
        """The error for a decision that did not arrive in time."""
        return PolicyUnavailableError(
            f"OPA at {self.url} did not answer within {self.timeout_seconds * 1000:.0f} ms"
        )

    def unavailable(self, err: BaseException) -> PolicyUnavailableError:
        """The error for a decision that could not be obtained."""
        return PolicyUnavailableError(f"OPA at {self.url} is unavailable ({type(err).__name__})")

    async def submit(self, input: dict[str, Any]) -> PendingDecision:
        """Send the query for one call now; read the decision later from the result.

        Nothing may be served, recorded as served or queued on the strength of the
        query until :meth:`PendingDecision.decision` returned an allowing decision.

        Raises:
            PolicyUnavailableError: OPA cannot be reached in time.
        """
        deadline = asyncio.get_running_loop().time() + self.timeout_seconds
        body = json.dumps({"input": input}, separators=(",", ":")).encode()
        try:
            async with asyncio.timeout_at(deadline):
                exchange = await self.transport.send("POST", DECISION_PATH, body)
        except TimeoutError:
            raise self.timed_out() from None
        except Exception as err:  # connection and TLS errors: fail closed
            raise self.unavailable(err) from None
        return PendingDecision(self, exchange, deadline)

    async def decide(self, input: dict[str, Any]) -> Decision:
        """Return OPA's decision for one call.

        Raises:
            PolicyUnavailableError: no usable decision could be obtained in time.
        """
        pending = await self.submit(input)
        return await pending.decision()

    async def healthy(self) -> bool:
        """Return whether OPA reports healthy with its bundles/policies loaded."""
        try:
            async with asyncio.timeout(max(self.timeout_seconds, 1.0)):
                exchange = await self.transport.send("GET", "/health")
                return (await exchange.response()).status == 200
        except Exception:
            return False

    async def close(self) -> None:
        """Close the connections to OPA (safe to call twice)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                await transport.close()
            except Exception:  # closing must never raise
                _log.debug("closing the OPA connections failed", exc_info=True)
