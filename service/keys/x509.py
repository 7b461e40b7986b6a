"""X.509 building blocks shared by ztml's certificate authorities.

The local stack's development CA (:mod:`service.authn.tls`) and the local cluster's CAs
(:mod:`service.cluster.pki`) build certificates the same way: ECDSA P-256 keys, SHA-256
signatures, a five-minute backdate for clock skew, a subject key identifier, and a CA
that may sign only leaf certificates (path length 0).
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

BACKDATE = dt.timedelta(minutes=5)
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    *,
    now: dt.datetime,
    validity: dt.timedelta,
) -> x509.CertificateBuilder:
    """Return a builder with subject, issuer, key, serial, validity and key identifier set."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def self_signed_ca(
    key: ec.EllipticCurvePrivateKey, name: x509.Name, *, now: dt.datetime, validity: dt.timedelta
) -> x509.Certificate:
    """Return a self-signed CA certificate that may sign leaf certificates only."""
    return (
        certificate_builder(name, name, key.public_key(), now=now, validity=validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
