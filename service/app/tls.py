"""TLS on the service port: BentoML's settings, uvicorn's context, the caller's certificate.

BentoML serves TLS when the service's ``ssl`` configuration names a certificate
(:func:`bentoml_ssl`, built from the ``ZTML_TLS_*`` variables of
:mod:`service.app.config`); each worker's uvicorn then wraps the API socket. Three hooks
(:func:`install`, run when a worker imports the service) add what BentoML 1.4 and
uvicorn 0.54 do not offer:

* **protocol floor**: uvicorn builds its context from a protocol constant only; the hook
  sets TLS 1.2 as the minimum (TLS 1.3 is negotiated whenever the client can), AEAD
  ciphers with forward secrecy for TLS 1.2, no renegotiation.
* **the caller's certificate in the request**: uvicorn's scope has no TLS information.
  When a connection's handshake is done, the hook wraps that connection's ASGI app so
  each request's scope carries the ASGI TLS extension (``scope["extensions"]["tls"]``:
  ``client_cert_chain``, ``client_cert_name``, ``tls_version``) and the certificate's
  identity read once per connection (:data:`CLIENT_CERT_SCOPE_KEY`, see
  :mod:`service.authn.client_cert`), which the request path puts into the policy input.
* **refused handshakes**: a handshake that fails never reaches uvicorn or the app
  (asyncio closes the connection quietly). The hook on asyncio's server-side TLS
  protocol reports each one that failed on TLS grounds (no or untrusted client
  certificate, plain HTTP sent to the TLS port, no common protocol version) to a sink
  (:func:`report_refusals_to`; the service audits them) and logs it. A client that
  merely disconnects during the handshake (a TCP health check) is not reported.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

from service.app.config import AppConfig, TlsSettings
from service.app.errors import StartRefusedError

_log = logging.getLogger(__name__)

#: The scope key holding the verified client certificate's policy facts (or None).
CLIENT_CERT_SCOPE_KEY = "ztml.client_cert"
#: TLS 1.2 cipher suites: ECDHE key exchange and AEAD only (TLS 1.3 suites are all AEAD).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
_CERT_REQS = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

#: Receives each refused handshake: (client address, status, reason).
RefusalSink = Callable[[str, int, str], None]
_sink: list[RefusalSink] = []


def bentoml_ssl(config: AppConfig) -> dict[str, Any]:
    """Return the ``ssl`` configuration of ``@bentoml.service`` for ``config``.

    Without TLS settings (plain HTTP, or a configuration the start-up check refuses) it
    is ``{"enabled": False}``.
    """
    settings = config.tls
    if settings is None:
        return {"enabled": False}
    ssl_config: dict[str, Any] = {
        "enabled": True,
        "certfile": str(settings.cert_file),
        "keyfile": str(settings.key_file),
        "ciphers": TLS12_CIPHERS,
        "cert_reqs": int(_CERT_REQS[settings.client_auth]),
    }
    if settings.client_ca_file is not None:
        ssl_config["ca_certs"] = str(settings.client_ca_file)
    return ssl_config


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """Set the protocol floor and options on a server context; return it."""
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """Return the context uvicorn will build for ``settings``, hardened.

    Raises:
        StartRefusedError: a file is missing, unreadable, or the key does not match the
            certificate (named, with the variable to fix).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    except (OSError, ssl.SSLError) as err:
        reason = (
            f"TLS certificate {settings.cert_file} or key {settings.key_file} unusable "
            f"({type(err).__name__}: {getattr(err, 'strerror', None) or err}): check "
            "ZTML_TLS_CERT and ZTML_TLS_KEY"
        )
        raise StartRefusedError(reason, (reason,)) from None
    context.set_ciphers(TLS12_CIPHERS)
    context.verify_mode = _CERT_REQS[settings.client_auth]
    if settings.client_ca_file is not None:
        try:
            context.load_verify_locations(str(settings.client_ca_file))
        except (OSError, ssl.SSLError) as err:
            reason = (
                f"client CA file {settings.client_ca_file} unusable ({type(err).__name__}): "
                "check ZTML_TLS_CLIENT_CA"
            )
            raise StartRefusedError(reason, (reason,)) from None
    return harden(context)


def check_transport(config: AppConfig) -> None:
    """Refuse to start without TLS unless plain HTTP was asked for by name.

    Raises:
        StartRefusedError: no TLS settings and no opt-out, or unusable TLS files.
    """
    if config.tls is not None:
        server_context(config.tls)
        return
    if not config.insecure_plain_http:
        reason = (
            "no TLS certificate for the service port: set ZTML_TLS_CERT and ZTML_TLS_KEY "
            "(PEM files), or ZTML_INSECURE_PLAIN_HTTP=true to serve plain HTTP"
        )
        raise StartRefusedError(reason, (reason,))


def report_refusals_to(sink: RefusalSink) -> None:
    """Send each refused handshake of this worker to ``sink`` (replacing any before)."""
    _sink[:] = [sink]


def refusal(err: ssl.SSLError) -> tuple[int, str]:
    """Classify a failed server-side handshake: (status, reason).

    The status follows the codes some TLS servers log for these cases: 495 for a client
    certificate that did not verify, 496 for none where one is required, 497 for plain
    HTTP sent to the TLS port, 400 for any other TLS failure.
    """
    code = str(getattr(err, "reason", "") or "")
    if code == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return 496, "TLS handshake refused: no client certificate"
    if isinstance(err, ssl.SSLCertVerificationError):
        detail = getattr(err, "verify_message", None) or "verify failed"
        return 495, f"TLS handshake refused: client certificate not trusted ({detail})"
    if code == "HTTP_REQUEST":
        return 497, "TLS handshake refused: plain HTTP sent to the TLS port"
    if "ALERT" in code:
        return 400, f"TLS handshake ended by the client ({code})"
    return 400, f"TLS handshake refused ({code or type(err).__name__})"


def _report(transport: Any, err: ssl.SSLError) -> None:
    peer = transport.get_extra_info("peername") if transport is not None else None
    client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
    status, reason = refusal(err)
    _log.warning("ztml: %s from %s", reason, client)
    for sink in _sink:
        try:
            sink(client, status, reason)
        except Exception:  # a refused connection must not break the server's loop
            _log.exception("recording a refused TLS handshake failed")


def connection_facts(ssl_object: Any) -> tuple[dict[str, object], dict[str, object] | None]:
    """Return a TLS connection's ASGI TLS extension and its client certificate's facts."""
    from service.authn.client_cert import read_client_certificate
    from service.authn.errors import TLSSetupError

    der = ssl_object.getpeercert(binary_form=True)
    facts: dict[str, object] | None = None
    chain: list[str] = []
    name = None
    if der:
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        try:
            certificate = read_client_certificate(der)
        except TLSSetupError:
            _log.warning("ztml: a verified client certificate does not parse; ignoring it")
        else:
            facts, name = certificate.facts(), certificate.subject
    extension: dict[str, object] = {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }
    return extension, facts


class _TlsScope:
    """One connection's ASGI app: adds the connection's TLS facts to each request."""

    __slots__ = ("app", "client_cert", "extension")

    def __init__(
        self, app: Any, extension: dict[str, object], client_cert: dict[str, object] | None
    ) -> None:
        self.app = app
        self.extension = extension
        self.client_cert = client_cert

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("extensions", {})["tls"] = self.extension
            scope[CLIENT_CERT_SCOPE_KEY] = self.client_cert
        await self.app(scope, receive, send)


def _hook_connection_made(http_protocol: Any) -> None:
    """Make each TLS connection of ``http_protocol`` carry its TLS facts (:class:`_TlsScope`)."""
    made = http_protocol.connection_made

    def connection_made(self: Any, transport: Any) -> None:
        made(self, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.app = _TlsScope(self.app, *connection_facts(ssl_object))

    http_protocol.connection_made = connection_made


def install() -> None:
    """Install the three hooks in this process (once; see the module's description).

    Raises:
        RuntimeError: uvicorn or asyncio no longer has what a hook wraps; serving TLS
            without the hooks would drop the protocol floor or the caller's identity.
    """
    import asyncio.sslproto

    import uvicorn.config
    from uvicorn.protocols.http import h11_impl

    if getattr(uvicorn.config.create_ssl_context, "ztml_hook", False):
        return
    protocol = asyncio.sslproto.SSLProtocol
    if not hasattr(protocol, "_on_handshake_complete") or not hasattr(
        h11_impl.H11Protocol, "connection_made"
    ):
        raise RuntimeError("this uvicorn/asyncio has no TLS hooks ztml can install")

    create = uvicorn.config.create_ssl_context

    def create_ssl_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        return harden(create(*args, **kwargs))

    create_ssl_context.ztml_hook = True  # type: ignore[attr-defined]
    uvicorn.config.create_ssl_context = create_ssl_context

    protocols: list[Any] = [h11_impl.H11Protocol]
    try:  # uvicorn prefers httptools' parser when it is installed
        from uvicorn.protocols.http import httptools_impl
    except ImportError:
        pass
    else:
        protocols.append(httptools_impl.HttpToolsProtocol)
    for http_protocol in protocols:
        _hook_connection_made(http_protocol)

    complete = protocol._on_handshake_complete

    def on_handshake_complete(self: Any, handshake_exc: Any) -> None:
        if isinstance(handshake_exc, ssl.SSLError) and getattr(self, "_server_side", False):
            _report(getattr(self, "_transport", None), handshake_exc)
        complete(self, handshake_exc)

    protocol._on_handshake_complete = on_handshake_complete  # type: ignore[method-assign]
