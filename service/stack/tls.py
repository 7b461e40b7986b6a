"""TLS for the local stack's service port: its certificate, accepted client issuers, checks.

``ztml up`` serves TLS with a certificate from the stack's local CA in ``$ZTML_HOME/tls``
(:func:`service.authn.tls.make_dev_ca`), or the operator's own pair, and, with client
certificates on, accepts those of the operator's CAs and of its own CA. The service reads
the files through the ``ZTML_TLS_*`` settings (:func:`service_tls_env`, see
:mod:`service.app.config`).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.authn.errors import TLSSetupError
from service.authn.tls import DevCertificates, make_dev_ca
from service.stack.errors import StackError

ClientAuth = Literal["off", "optional", "required"]


def tls_dir(home: Path) -> Path:
    """Where the stack keeps its local CA, the service's certificate and its own client's."""
    return home / "tls"


@dataclass(frozen=True)
class ServiceTls:
    """The TLS files the service reads, and what a local caller needs to reach it.

    Attributes:
        cert: The server certificate the service presents.
        key: Its private key.
        ca: The stack's CA certificate (callers verify the service with it), or None
            for an operator's certificate (the caller must trust its issuer).
        client_ca: The CA bundle that signs accepted client certificates, or None.
        client_auth: ``off``, ``optional`` or ``required``.
        own: The stack's own client certificate and key (signed by its CA).
    """

    cert: Path
    key: Path
    ca: Path | None
    client_ca: Path | None
    client_auth: ClientAuth
    own: DevCertificates


def _copy_private(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(source.read_bytes())


def service_tls(
    home: Path,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    client_ca: Path | None = None,
    client_auth: ClientAuth = "off",
    insecure_plain_http: bool = False,
) -> ServiceTls | None:
    """Prepare the service's TLS files in ``$ZTML_HOME/tls``; None for plain HTTP.

    The local CA (``ca.pem``, its key kept from the servers), the service's certificate
    for 127.0.0.1 and localhost (``server.pem``) and the stack's own client certificate
    (``client.pem``, CN ``ztml-client``) are made at the first start and renewed a day
    before they expire. An operator's pair is checked and copied there
    (``operator.pem``/``operator.key``), so the servers' user can read it. With client
    certificates on, ``client-ca.pem`` holds the accepted issuers: the stack's CA (its
    readiness check presents ``client.pem``) and the operator's ``client_ca``, if any.

    Args:
        home: The stack's ``ZTML_HOME``.
        tls_cert: The operator's server certificate (PEM), with ``tls_key``.
        tls_key: Its private key (PEM).
        client_ca: CA certificates that may sign callers' client certificates.
        client_auth: ``off``, ``optional`` or ``required``.
        insecure_plain_http: Serve plain HTTP (no files are prepared).

    Raises:
        StackError: the options contradict each other, or a file is unusable.
    """
    tls_options = (tls_cert, tls_key, client_ca)
    if insecure_plain_http:
        if any(tls_options) or client_auth != "off":
            raise StackError("--insecure-plain-http turns TLS off; drop the TLS options.")
        return None
    if (tls_cert is None) != (tls_key is None):
        raise StackError("--tls-cert and --tls-key go together: give both or neither.")
    if client_ca is not None and client_auth == "off":
        raise StackError("--client-ca needs --client-auth optional or required.")
    directory = tls_dir(home)
    try:
        own = make_dev_ca(directory)
    except TLSSetupError as err:
        raise StackError(str(err)) from None
    cert, key = own.server_cert, own.server_key
    ca: Path | None = own.ca_cert
    if tls_cert is not None and tls_key is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(tls_cert), str(tls_key))
        except (OSError, ssl.SSLError) as err:
            raise StackError(
                f"--tls-cert {tls_cert} and --tls-key {tls_key} are not a "
                f"usable PEM certificate and matching key ({type(err).__name__}: {err})."
            ) from None
        cert, key, ca = directory / "operator.pem", directory / "operator.key", None
        cert.write_bytes(tls_cert.read_bytes())
        _copy_private(tls_key, key)
    accepted = None
    if client_auth != "off":
        bundle = own.ca_cert.read_bytes()
        if client_ca is not None:
            try:
                extra = client_ca.read_bytes()
                ssl.create_default_context(cadata=extra.decode("ascii"))
            except (OSError, ValueError, ssl.SSLError) as err:
                raise StackError(
                    f"--client-ca {client_ca} is not a PEM CA certificate file "
                    f"({type(err).__name__})."
                ) from None
            bundle += b"\n" + extra
        accepted = directory / "client-ca.pem"
        accepted.write_bytes(bundle)
        os.chmod(accepted, 0o644)
    return ServiceTls(cert, key, ca, accepted, client_auth, own)


def service_tls_env(tls: ServiceTls | None) -> dict[str, str]:
    """The service's ``ZTML_TLS_*`` settings (or the plain-HTTP opt-out)."""
    if tls is None:
        return {"ZTML_INSECURE_PLAIN_HTTP": "true"}
    env = {"ZTML_TLS_CERT": str(tls.cert), "ZTML_TLS_KEY": str(tls.key)}
    if tls.client_ca is not None:
        env["ZTML_TLS_CLIENT_CA"] = str(tls.client_ca)
        env["ZTML_TLS_CLIENT_AUTH"] = tls.client_auth
    return env


def caller_context(tls: ServiceTls) -> ssl.SSLContext:
    """A client context for the stack's own checks: trusts the service, presents a cert.

    An operator's certificate is not verified here (the stack does not know its issuer;
    the check only asks its own child process on loopback whether it is ready).
    """
    if tls.ca is not None:
        context = ssl.create_default_context(cafile=str(tls.ca))
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.client_auth != "off":
        context.load_cert_chain(str(tls.own.client_cert), str(tls.own.client_key))
    return context
