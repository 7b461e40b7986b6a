"""The identity a verified client certificate gives the policy."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.authn import TLSSetupError
from service.authn.client_cert import read_client_certificate


def certificate(common_name: str | None, sans: list[x509.GeneralName]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme")]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme services CA")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_san_uris_dns_names_and_cn_are_the_identities_in_that_order() -> None:
    der = certificate(
        "svc-batch",
        [x509.DNSName("batch.acme.internal"), x509.UniformResourceIdentifier("spiffe://acme/b")],
    )
    facts = read_client_certificate(der).facts()
    assert facts["identities"] == ["spiffe://acme/b", "batch.acme.internal", "svc-batch"]
    assert facts["subject"] == "CN=svc-batch,O=acme"
    assert facts["issuer"] == "CN=acme services CA"
    assert str(facts["fingerprint"]).startswith("sha256:")


def test_a_certificate_without_cn_or_sans_has_no_identity() -> None:
    facts = read_client_certificate(certificate(None, [])).facts()
    assert facts["common_name"] is None
    assert facts["identities"] == []


def test_a_repeated_name_is_listed_once() -> None:
    der = certificate("svc-a", [x509.DNSName("svc-a")])
    assert read_client_certificate(der).identities == ("svc-a",)


def test_bytes_that_are_not_a_certificate_are_refused() -> None:
    with pytest.raises(TLSSetupError):
        read_client_certificate(b"not a certificate")
