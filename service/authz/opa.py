"""Ask a real OPA server for each authorization decision (opa-python-client, async).

One :class:`OpaAuthorizer` per worker process keeps one aiohttp session (keep-alive
connections to OPA) bound to the worker's event loop. Every failure to get a usable
answer (connection refused, timeout, HTTP error, undefined or malformed decision) raises
:class:`~service.authz.errors.PolicyUnavailableError`: the caller answers 503 and denies.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from typing import Any
from urllib.parse import urlsplit

from service.authz.decision import Decision, parse_decision
from service.authz.errors import PolicyUnavailableError

_log = logging.getLogger(__name__)
DECISION_PACKAGE = "ztml/authz"
DECISION_RULE = "decision"


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
        self._ssl_context = ssl_context
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _session(self) -> Any:
        from opa_client import AsyncOpaClient

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            options = {
                "host": self._host,
                "port": self._port,
                "retries": 0,
                "timeout": self.timeout_seconds,
            }
            if self._ssl_context is not None:
                from service.authz.tls import mtls_client

                client = mtls_client(context=self._ssl_context, **options)
            else:
                client = AsyncOpaClient(ssl=self._ssl, **options)
            await client._init_session()  # the client's own session set-up (no context)
            self._client, self._loop = client, loop
        return self._client

    async def decide(self, input: dict[str, Any]) -> Decision:
        """Return OPA's decision for one call.

        Raises:
            PolicyUnavailableError: no usable decision could be obtained in time.
        """
        try:
            client = await self._session()
            async with asyncio.timeout(self.timeout_seconds):
                response = await client.query_rule(
                    input_data=input, package_path=DECISION_PACKAGE, rule_name=DECISION_RULE
                )
        except PolicyUnavailableError:
            raise
        except TimeoutError:
            raise PolicyUnavailableError(
                f"OPA at {self.url} did not answer within {self.timeout_seconds * 1000:.0f} ms"
            ) from None
        except Exception as err:  # aiohttp, JSON and HTTP errors: fail closed
            raise PolicyUnavailableError(
                f"OPA at {self.url} is unavailable ({type(err).__name__})"
            ) from None
        decision = parse_decision(response)
        if decision.decision_id is None:
            # Decision logging is off on this OPA: tie the audit event to a local id.
            decision = Decision(
                allow=decision.allow,
                reasons=decision.reasons,
                obligations=decision.obligations,
                decision_id=f"local-{uuid.uuid4()}",
            )
        return decision

    async def healthy(self) -> bool:
        """Return whether OPA reports healthy with its bundles/policies loaded."""
        try:
            client = await self._session()
            async with asyncio.timeout(max(self.timeout_seconds, 1.0)):
                return bool(await client.check_health())
        except Exception:
            return False

    async def close(self) -> None:
        """Close the HTTP session (safe to call twice)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close_connection()
            except Exception:  # closing must never raise
                _log.debug("closing the OPA session failed", exc_info=True)
