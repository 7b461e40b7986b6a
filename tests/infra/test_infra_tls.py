"""A TLS identity from config is checked before anything is declared; its key stays a secret."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import pulumi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.errors import ConfigError
from infra.tls import TlsIdentity, TlsKeys, parse_tls_identity, tls_secret
from service.keys.x509 import certificate_builder, self_signed_ca

HOST = "ztml-admission.ztml-admission.svc"
KEYS = TlsKeys(cert="ztml:testTlsCert", key="ztml:testTlsKey", ca_bundle="ztml:testCaBundle")
NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(name: str = "test-ca") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    return Issued(self_signed_ca(key, _name(name), now=NOW, validity=dt.timedelta(days=30)), key)


def _intermediate(root: Issued) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        certificate_builder(
            _name("intermediate"),
            root.cert.subject,
            key.public_key(),
            now=NOW,
            validity=dt.timedelta(days=30),
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _leaf(
    issuer: Issued,
    *,
    hosts: tuple[str, ...] = (HOST,),
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
    validity: dt.timedelta = dt.timedelta(days=30),
    now: dt.datetime = NOW,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        certificate_builder(
            _name("webhook"), issuer.cert.subject, key.public_key(), now=now, validity=validity
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _parse(
    chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey, ca: Issued
) -> TlsIdentity:
    return parse_tls_identity(
        keys=KEYS,
        cert_pem="".join(_pem(c) for c in chain),
        key_pem=_key_pem(key),
        ca_bundle_pem=_pem(ca.cert),
        hosts=(HOST,),
    )


def test_a_certificate_the_ca_signed_for_the_host_is_accepted() -> None:
    ca = _ca()
    leaf = _leaf(ca)
    identity = _parse([leaf.cert], leaf.key, ca)
    assert identity.hosts == (HOST,)
    assert identity.not_after == leaf.cert.not_valid_after_utc
    assert identity.cert_pem == _pem(leaf.cert)
    assert "PRIVATE" not in repr(identity)


def test_a_chain_through_an_intermediate_is_accepted() -> None:
    root = _ca()
    intermediate = _intermediate(root)
    leaf = _leaf(intermediate)
    _parse([leaf.cert, intermediate.cert], leaf.key, root)


def test_a_key_of_another_certificate_is_refused_by_name() -> None:
    ca = _ca()
    leaf = _leaf(ca)
    with pytest.raises(ConfigError, match="ztml:testTlsKey: the key does not belong"):
        _parse([leaf.cert], _leaf(ca).key, ca)


def test_a_ca_that_did_not_sign_the_certificate_is_refused_by_name() -> None:
    leaf = _leaf(_ca("real-ca"))
    with pytest.raises(ConfigError, match="ztml:testCaBundle: no certificate in it"):
        _parse([leaf.cert], leaf.key, _ca("other-ca"))


def test_a_certificate_for_another_host_is_refused_by_name() -> None:
    ca = _ca()
    leaf = _leaf(ca, hosts=("other.svc",))
    with pytest.raises(ConfigError, match=f"ztml:testTlsCert: the certificate must name {HOST}"):
        _parse([leaf.cert], leaf.key, ca)


def test_a_client_certificate_is_refused_by_name() -> None:
    ca = _ca()
    leaf = _leaf(ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    with pytest.raises(ConfigError, match=r"ztml:testTlsCert: .*serverAuth"):
        _parse([leaf.cert], leaf.key, ca)


def test_an_expired_certificate_is_refused_by_name() -> None:
    ca = _ca()
    leaf = _leaf(ca, validity=dt.timedelta(days=1), now=NOW - dt.timedelta(days=3))
    with pytest.raises(ConfigError, match="ztml:testTlsCert: the certificate expired"):
        _parse([leaf.cert], leaf.key, ca)


@pytest.mark.parametrize(
    ("field", "key"),
    [("cert_pem", "ztml:testTlsCert"), ("ca_bundle_pem", "ztml:testCaBundle")],
)
def test_text_that_is_not_pem_is_refused_by_name(field: str, key: str) -> None:
    ca = _ca()
    leaf = _leaf(ca)
    values = {
        "cert_pem": _pem(leaf.cert),
        "key_pem": _key_pem(leaf.key),
        "ca_bundle_pem": _pem(ca.cert),
        field: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    }
    with pytest.raises(ConfigError, match=f"{key}: accepted values: PEM certificates"):
        parse_tls_identity(keys=KEYS, hosts=(HOST,), **values)


def test_the_ca_bundle_is_base64_for_ca_bundle_fields() -> None:
    ca = _ca()
    leaf = _leaf(ca)
    identity = _parse([leaf.cert], leaf.key, ca)
    import base64

    assert base64.b64decode(identity.ca_bundle_base64).decode() == _pem(ca.cert)


class _CapturedSecret:
    """Stands in for k8s.core.v1.Secret and keeps what the program passed it."""

    captured: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, **kwargs: Any) -> None:
        _CapturedSecret.captured = {"name": name, **kwargs}
        self.metadata = SimpleNamespace(name=pulumi.Output.from_input(f"{name}-x"))


def test_the_secret_holds_the_key_only_as_a_pulumi_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    import infra.tls

    monkeypatch.setattr(infra.tls.k8s.core.v1, "Secret", _CapturedSecret)
    ca = _ca()
    leaf = _leaf(ca)
    identity = _parse([leaf.cert], leaf.key, ca)

    @pulumi.runtime.test
    def declare() -> pulumi.Output[None]:
        _, parts = tls_secret(
            "unit-tls",
            identity=identity,
            namespace="unit",
            volume="unit-tls",
            mount_path="/etc/unit/tls",
            opts=pulumi.ResourceOptions(),
        )
        (volume,) = parts.volumes
        (mount,) = parts.mounts
        assert volume.name == mount.volume == "unit-tls"
        assert mount.path == "/etc/unit/tls" and mount.read_only
        captured = _CapturedSecret.captured
        assert captured["type"] == "kubernetes.io/tls"
        data = captured["string_data"]
        assert data["tls.crt"] == identity.cert_pem, "the certificate is not secret"
        key = data["tls.key"]
        assert isinstance(key, pulumi.Output), "the private key must be a Pulumi secret"

        def check(values: list[Any]) -> None:
            is_secret, text = values
            assert is_secret is True, "the private key must be a Pulumi secret"
            assert text == identity.key_pem

        return pulumi.Output.all(pulumi.Output.is_secret(key), key).apply(check)

    declare()
