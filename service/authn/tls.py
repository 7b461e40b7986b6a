"""The local stack's certificate authority: TLS for the service port, mutual TLS for callers.

:func:`make_dev_ca` writes, into one ``0700`` directory (``$ZTML_HOME/tls`` for
``ztml up``):

* ``ca.pem`` / ``ca.key``: a self-signed CA (ECDSA P-256, path length 0); callers trust
  ``ca.pem`` (``curl --cacert``);
* ``server.pem`` / ``server.key``: the service's certificate for ``localhost`` and
  ``127.0.0.1`` (extended key usage serverAuth);
* ``client.pem`` / ``client.key``: a client certificate (clientAuth, CN and DNS name
  ``ztml-client``): the stack's own caller identity, for its readiness check when client
  certificates are required and as a ready-made mutual-TLS caller.

Private keys are PKCS#8 PEM files with mode ``0600``. The same layout serves any pair of
TLS endpoints in the tests and benchmarks (OPA over loopback TCP with mutual TLS).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service.authn.errors import TLSSetupError
from service.keys.store import write_private_pem
from service.keys.x509 import certificate_builder, self_signed_ca
from service.toolchain.paths import ztml_home

VALIDITY_DAYS = 90
RENEW_BEFORE = dt.timedelta(days=1)
SERVER_NAMES = ("localhost",)
SERVER_ADDRESSES = ("127.0.0.1",)


def default_tls_dir() -> Path:
    """Return ``$ZTML_HOME/tls``, where the local stack keeps its development CA."""
    return ztml_home() / "tls"


@dataclass(frozen=True)
class DevCertificates:
    """Paths of the CA, server and client certificates and keys."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> DevCertificates:
        """Return the standard file layout under ``directory``."""
        d = Path(directory)
        return cls(
            directory=d,
            ca_cert=d / "ca.pem",
            ca_key=d / "ca.key",
            server_cert=d / "server.pem",
            server_key=d / "server.key",
            client_cert=d / "client.pem",
            client_key=d / "client.key",
        )

    def files(self) -> tuple[Path, ...]:
        """All six files."""
        return (
            self.ca_cert,
            self.ca_key,
            self.server_cert,
            self.server_key,
            self.client_cert,
            self.client_key,
        )

    def server_context(self) -> ssl.SSLContext:
        """Return a server TLS context that requires a client certificate from the CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_cert))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.server_cert), str(self.server_key))
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self, *, with_certificate: bool = True) -> ssl.SSLContext:
        """Return a client TLS context trusting the CA, presenting the client certificate."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_cert))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if with_certificate:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.unlink(missing_ok=True)
    write_private_pem(path, key)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ztml development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return certificate_builder(
        subject, issuer, public, now=now, validity=dt.timedelta(days=VALIDITY_DAYS)
    )


def _leaf(
    *,
    common_name: str,
    usage: x509.ObjectIdentifier,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in SERVER_ADDRESSES]
    if usage == ExtendedKeyUsageOID.CLIENT_AUTH:
        sans = [x509.DNSName(common_name)]
    cert = (
        _builder(_name(common_name), ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _still_valid(paths: DevCertificates, now: dt.datetime) -> bool:
    if not all(p.exists() for p in paths.files()):
        return False
    try:
        for cert_path in (paths.ca_cert, paths.server_cert, paths.client_cert):
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.not_valid_after_utc - RENEW_BEFORE < now:
                return False
    except ValueError:
        return False
    return True


def make_dev_ca(directory: Path, *, force: bool = False) -> DevCertificates:
    """Create the development CA and its server and client certificates.

    Existing certificates are kept while they are valid for at least another day, unless
    ``force`` is set; otherwise everything is regenerated together.

    Args:
        directory: Where to write the files (created or tightened to ``0700``).
        force: Regenerate even when valid certificates exist.

    Returns:
        The paths of the files.

    Raises:
        TLSSetupError: the directory cannot be created or written.
    """
    paths = DevCertificates.in_directory(directory)
    now = dt.datetime.now(dt.UTC)
    try:
        paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(paths.directory, 0o700)
        if not force and _still_valid(paths, now):
            return paths
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("ztml development CA")
        ca_cert = self_signed_ca(
            ca_key, ca_name, now=now, validity=dt.timedelta(days=VALIDITY_DAYS)
        )
        server_cert, server_key = _leaf(
            common_name="localhost",
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            ca_key=ca_key,
            ca_name=ca_name,
            now=now,
        )
        client_cert, client_key = _leaf(
            common_name="ztml-client",
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            ca_key=ca_key,
            ca_name=ca_name,
            now=now,
        )
        _write_private(paths.ca_key, ca_key)
        _write_private(paths.server_key, server_key)
        _write_private(paths.client_key, client_key)
        _write_cert(paths.ca_cert, ca_cert)
        _write_cert(paths.server_cert, server_cert)
        _write_cert(paths.client_cert, client_cert)
    except OSError as err:
        raise TLSSetupError(
            f"Cannot write development certificates to {paths.directory}: {err.strerror}. "
            "Choose a directory you own (default: $ZTML_HOME/tls)."
        ) from None
    return paths
