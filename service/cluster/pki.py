"""The local cluster's certificates: one CA for Kubernetes, one for etcd.

Every component talks TLS and authenticates with a client certificate whose subject is
its Kubernetes identity (``CN`` user, ``O`` groups), as kubeadm lays them out. Keys are
ECDSA P-256, written with mode 0600 into the cluster's state directory; nothing is
committed or reused across ``down``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service.keys.store import write_private_pem
from service.keys.x509 import certificate_builder, self_signed_ca

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Identity:
    """One certificate to issue.

    Attributes:
        name: File stem (``<name>.crt``, ``<name>.key``).
        common_name: The subject CN (the Kubernetes user name).
        groups: The subject O values (the Kubernetes groups).
        server: Whether the certificate serves TLS (else it is a client certificate).
        hosts: DNS names and IP addresses for a serving certificate.
        client: Whether a serving certificate may also authenticate as a client.
    """

    name: str
    common_name: str
    groups: tuple[str, ...] = ()
    server: bool = False
    hosts: tuple[str, ...] = ()
    client: bool = False


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.unlink(missing_ok=True)
    write_private_pem(path, key)


def _name(common_name: str, groups: tuple[str, ...] = ()) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    return x509.Name([*parts, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


@dataclass(frozen=True)
class Authority:
    """A CA on disk that issues the certificates of one trust domain."""

    directory: Path
    name: str

    @property
    def cert_path(self) -> Path:
        """Return the CA certificate's path."""
        return self.directory / f"{self.name}.crt"

    @property
    def key_path(self) -> Path:
        """Return the CA key's path."""
        return self.directory / f"{self.name}.key"

    def ensure(self) -> None:
        """Create the CA unless it exists."""
        if self.cert_path.exists() and self.key_path.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = self_signed_ca(key, _name(f"ztml-local-{self.name}"), now=now, validity=VALIDITY)
        _write_key(self.key_path, key)
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, identity: Identity) -> tuple[Path, Path]:
        """Issue ``identity`` unless its certificate exists; return ``(crt, key)`` paths."""
        crt = self.directory / f"{identity.name}.crt"
        key_path = self.directory / f"{identity.name}.key"
        if crt.exists() and key_path.exists():
            return crt, key_path
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{self.key_path} is not an ECDSA key")
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = []
        if identity.server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if identity.client or not identity.server:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            certificate_builder(
                _name(identity.common_name, identity.groups),
                ca_cert.subject,
                key.public_key(),
                now=now,
                validity=VALIDITY,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if identity.hosts:
            builder = builder.add_extension(_san(identity.hosts), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(key_path, key)
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return crt, key_path


def service_account_keys(directory: Path) -> tuple[Path, Path]:
    """Create the service-account token signing key pair unless present; return its paths."""
    private = directory / "service-account.key"
    public = directory / "service-account.pub"
    if private.exists() and public.exists():
        return private, public
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(private, key)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
