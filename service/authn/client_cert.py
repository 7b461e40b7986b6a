"""The identity in a caller's verified TLS client certificate, as facts for the policy.

With client certificates on (``ZTML_TLS_CLIENT_AUTH``), the TLS handshake has already
verified the certificate against the trusted client CAs before any request is read; this
module only reads who it names. The facts go to OPA as ``input.client_cert``:

* ``subject``, ``issuer``: RFC 4514 strings (``CN=svc-batch,O=acme``);
* ``common_name``: the subject's CN, or null;
* ``uris``, ``dns_names``: the subjectAltName URIs (``spiffe://acme/batch``) and DNS names;
* ``identities``: every name above that may identify the caller (URIs, DNS names, CN);
* ``fingerprint``: ``sha256:<hex>`` of the certificate's DER encoding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from service.authn.errors import TLSSetupError

#: Bounds on what a certificate may contribute to a policy input.
MAX_NAMES = 16
MAX_NAME_LENGTH = 256


@dataclass(frozen=True)
class ClientCertificate:
    """Who a verified client certificate names.

    Attributes:
        subject: The subject as an RFC 4514 string.
        issuer: The issuer as an RFC 4514 string.
        common_name: The subject's common name, None when it has none.
        uris: subjectAltName URIs.
        dns_names: subjectAltName DNS names.
        fingerprint: ``sha256:<hex>`` of the DER certificate.
    """

    subject: str
    issuer: str
    common_name: str | None
    uris: tuple[str, ...]
    dns_names: tuple[str, ...]
    fingerprint: str

    @property
    def identities(self) -> tuple[str, ...]:
        """Every name that may identify the caller: URIs, then DNS names, then the CN."""
        names = [*self.uris, *self.dns_names]
        if self.common_name is not None:
            names.append(self.common_name)
        return tuple(dict.fromkeys(names))

    def facts(self) -> dict[str, object]:
        """The policy input's ``client_cert`` object."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "common_name": self.common_name,
            "uris": list(self.uris),
            "dns_names": list(self.dns_names),
            "identities": list(self.identities),
            "fingerprint": self.fingerprint,
        }


def _bounded(names: list[str]) -> tuple[str, ...]:
    return tuple(n for n in names[:MAX_NAMES] if 0 < len(n) <= MAX_NAME_LENGTH)


def read_client_certificate(der: bytes) -> ClientCertificate:
    """Read the identity of a DER certificate the TLS handshake verified.

    Raises:
        TLSSetupError: the bytes are not a certificate.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise TLSSetupError(f"the client certificate does not parse: {err}") from None
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = common[0].value if common else None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        dns_names = sans.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        uris, dns_names = [], []
    return ClientCertificate(
        subject=cert.subject.rfc4514_string()[:MAX_NAME_LENGTH],
        issuer=cert.issuer.rfc4514_string()[:MAX_NAME_LENGTH],
        common_name=(
            str(common_name)
            if isinstance(common_name, str) and 0 < len(common_name) <= MAX_NAME_LENGTH
            else None
        ),
        uris=_bounded(uris),
        dns_names=_bounded(dns_names),
        fingerprint="sha256:" + hashlib.sha256(der).hexdigest(),
    )
