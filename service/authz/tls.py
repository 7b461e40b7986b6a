"""TLS to OPA: verify OPA's certificate against the stack's CA and present a client one.

OPA started with ``--authentication=tls`` accepts only clients whose certificate the
stack's CA signed, so the model service (which holds the client key) is the only
process that can ask it for decisions, even on a shared host or in a shared pod.
"""

from __future__ import annotations

import asyncio
import ssl
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.authz.errors import PolicyUnavailableError

if TYPE_CHECKING:
    from service.authz.opa import OpaTarget

# Set, in the context of one query's task, to a future resolved once its body is written.
REQUEST_SENT: ContextVar[asyncio.Future[None] | None] = ContextVar(
    "ztml_opa_request_sent", default=None
)


@dataclass(frozen=True)
class OpaTls:
    """The files the service needs for mutual TLS with OPA.

    Attributes:
        ca_file: the CA that signed OPA's server certificate.
        cert_file: the service's client certificate (PEM).
        key_file: the client certificate's private key (PEM).
    """

    ca_file: Path
    cert_file: Path
    key_file: Path

    def context(self) -> ssl.SSLContext:
        """Return a client context: TLS 1.2+, OPA verified by our CA, our certificate.

        Raises:
            PolicyUnavailableError: a file is missing or unreadable (the service then
                cannot get decisions and denies).
        """
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as err:
            raise PolicyUnavailableError(
                f"cannot set up TLS to OPA ({type(err).__name__}): check ZTML_OPA_CA_FILE, "
                "ZTML_OPA_CERT_FILE and ZTML_OPA_KEY_FILE"
            ) from None
        return context


def opa_client(target: OpaTarget, *, timeout: float, context: ssl.SSLContext | None) -> Any:
    """Return an opa-python-client ``AsyncOpaClient`` for the service's decisions.

    For a Unix domain socket the session connects to the socket's path (no TCP, no TLS:
    the socket's file permissions decide who may ask). Over TCP, the library builds its
    TLS context from the system's CAs only; this subclass swaps in ours (the stack's CA
    and the service's client certificate). Either way it trims the aiohttp
    session for a hot, local, keep-alive connection: no cookie jar, no response
    decompression, no retries (a failed decision is a denial, never retried). When the
    request body has been written, the future in :data:`REQUEST_SENT` (as the query's
    task sees it) is resolved, so the caller knows OPA has the query.
    """
    import aiohttp
    from opa_client import AsyncOpaClient

    async def chunk_sent(*_: Any) -> None:
        sent = REQUEST_SENT.get()
        if sent is not None and not sent.done():
            sent.set_result(None)

    class _ServiceOpaClient(AsyncOpaClient):
        async def _init_session(self) -> None:
            tracing = aiohttp.TraceConfig()
            tracing.on_request_chunk_sent.append(chunk_sent)
            connector: aiohttp.BaseConnector
            if target.socket_path is not None:
                connector = aiohttp.UnixConnector(path=target.socket_path, limit=0)
            else:
                tls: ssl.SSLContext | bool = context if context is not None else target.https
                connector = aiohttp.TCPConnector(ssl=tls, limit=0, ttl_dns_cache=None)
            self._connector = connector
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=self._connector,
                # The decision's deadline is enforced by OpaAuthorizer (it excludes the
                # caller's own computation while the query is out); this bounds connecting.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trace_configs=[tracing],
            )

    return _ServiceOpaClient(
        host=target.host, port=target.port, ssl=target.https, retries=0, timeout=timeout
    )
