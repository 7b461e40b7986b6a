"""Component conventions, the mTLS material and the trust Secrets."""

from __future__ import annotations

import json
import re
from typing import Any

COMPONENT_TYPE_RE = re.compile(r"^ztml:[a-z]+:[A-Z][A-Za-z]+$")


def _type_chain(urn: str) -> list[str]:
    return urn.split("::")[2].split("$")


def _components(run: Any) -> dict[str, str]:
    """Component type -> component name."""
    return {
        _type_chain(u)[-1]: u.rsplit("::", 1)[1]
        for u in run.states
        if _type_chain(u)[-1].startswith("ztml:")
    }


def test_component_type_tokens_follow_the_convention(any_run: Any) -> None:
    for token in _components(any_run):
        assert COMPONENT_TYPE_RE.match(token), f"component type {token!r}"


def test_every_resource_is_a_named_child_of_a_component(any_run: Any) -> None:
    components = _components(any_run)
    for urn in any_run.states:
        chain = _type_chain(urn)
        if chain[-1].startswith(("ztml:", "pulumi:providers:")):
            continue
        assert chain[0].startswith("ztml:"), f"{urn}: not declared inside a component"
        parent_name = components[chain[-2]]
        child_name = urn.rsplit("::", 1)[1]
        assert child_name.startswith(f"{parent_name}-"), f"{urn}: not named {parent_name}-<role>"


def _tls(run: Any, kind: str) -> dict[str, dict[str, Any]]:
    return {u: s for u, s in run.states.items() if _type_chain(u)[-1] == kind}


def test_every_tls_key_is_ecdsa_p256(any_run: Any) -> None:
    keys = _tls(any_run, "tls:index/privateKey:PrivateKey")
    assert len(keys) == 3, sorted(keys)
    for urn, state in keys.items():
        assert state["algorithm"] == "ECDSA", urn
        assert state["ecdsaCurve"] == "P256", urn


def test_ca_is_self_signed_and_signs_opa_and_service(any_run: Any) -> None:
    ((ca_urn, ca),) = _tls(any_run, "tls:index/selfSignedCert:SelfSignedCert").items()
    assert ca["isCaCertificate"] is True, ca_urn
    assert "cert_signing" in ca["allowedUses"], ca_urn
    leaves = _tls(any_run, "tls:index/locallySignedCert:LocallySignedCert")
    uses = {u.rsplit("::", 1)[1]: set(s["allowedUses"]) for u, s in leaves.items()}
    assert "server_auth" in uses["ztml-mtls-opa-cert"]
    assert "client_auth" in uses["ztml-mtls-service-cert"]
    assert "server_auth" not in uses["ztml-mtls-service-cert"]
    requests = _tls(any_run, "tls:index/certRequest:CertRequest")
    opa_request = next(s for u, s in requests.items() if u.endswith("::ztml-mtls-opa-csr"))
    assert "127.0.0.1" in opa_request["ipAddresses"]


def test_tls_secrets_hold_certificate_key_and_ca(any_run: Any) -> None:
    secrets = {u: m for u, m in any_run.of_kind("Secret").items() if "MtlsCertificates" in u}
    assert len(secrets) == 2
    for urn, secret in secrets.items():
        assert set(secret["stringData"]) == {"tls.crt", "tls.key", "ca.crt"}, urn
        assert "PRIVATE KEY" in secret["stringData"]["tls.key"], urn


def test_issuers_secret_is_in_the_service_format(any_run: Any) -> None:
    secrets = {u.rsplit("::", 1)[1]: m for u, m in any_run.of_kind("Secret").items()}
    document = json.loads(secrets["ztml-trust-issuers"]["stringData"]["issuers.json"])
    assert document["audience"] == any_run.config.jwt_audience
    (issuer,) = document["issuers"]
    (expected,) = any_run.config.trusted_issuers
    assert issuer["iss"] == expected.iss
    assert issuer["keys"] == [
        {"kid": expected.kid, "alg": "EdDSA", "public_key_pem": expected.public_key_pem}
    ]


def test_trust_secret_names_each_key_by_its_role(any_run: Any) -> None:
    secrets = {u.rsplit("::", 1)[1]: m for u, m in any_run.of_kind("Secret").items()}
    files = secrets["ztml-trust-trust"]["stringData"]
    config = any_run.config
    expected = {f"trainer-{k.split(':')[1]}.pub" for k in config.trainer_key_ids} | {
        f"approver-{k.split(':')[1]}.pub" for k in config.approver_key_ids
    }
    assert set(files) == expected
    assert all("BEGIN PUBLIC KEY" in pem for pem in files.values())


def test_oms_signer_keys_reach_the_init_step_and_the_service(any_run: Any) -> None:
    secrets = {u.rsplit("::", 1)[1]: m for u, m in any_run.of_kind("Secret").items()}
    files = secrets["ztml-trust-oms-signers"]["stringData"]
    assert list(files.values()) == list(any_run.config.oms_signer_keys)
    for urn, manifest in any_run.of_kind("Deployment").items():
        spec = manifest["spec"]["template"]["spec"]
        for container in (*spec.get("initContainers", []), spec["containers"][0]):
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["ZTML_OMS_SIGNERS_DIR"] == "/etc/ztml/oms-signers", urn
            mount = next(m for m in container["volumeMounts"] if m["name"] == "oms-signers")
            assert mount["mountPath"] == "/etc/ztml/oms-signers", urn


def test_issuers_file_is_mounted_into_ztml_home(any_run: Any) -> None:
    for urn, manifest in any_run.of_kind("Deployment").items():
        model = manifest["spec"]["template"]["spec"]["containers"][0]
        mount = next(m for m in model["volumeMounts"] if m["name"] == "jwt-issuers")
        assert mount["mountPath"] == "/var/lib/ztml/issuers.json", urn
        assert mount["subPath"] == "issuers.json", urn


def test_secret_mounts_are_read_only(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        spec = manifest["spec"]["template"]["spec"]
        secret_volumes = {v["name"] for v in spec["volumes"] if "secret" in v}
        for container in spec["containers"] + spec.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] in secret_volumes:
                    assert mount.get("readOnly") is True, f"{urn}: {mount['name']} writable"
