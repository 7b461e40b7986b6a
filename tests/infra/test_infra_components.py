"""Component conventions, the mTLS material and the trust Secrets."""

from __future__ import annotations

import json
import re
from typing import Any

COMPONENT_TYPE_RE = re.compile(r"^ztml:[a-z]+:[A-Z][A-Za-z]+$")


def _type_chain(urn: str) -> list[str]:
    return urn.split("::")[2].split("$")


def _components(run: Any) -> dict[str, set[str]]:
    """Component type -> the names of its instances (one ModelService per model)."""
    names: dict[str, set[str]] = {}
    for u in run.states:
        if _type_chain(u)[-1].startswith("ztml:"):
            names.setdefault(_type_chain(u)[-1], set()).add(u.rsplit("::", 1)[1])
    return names


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
        parents = components[chain[-2]]
        child_name = urn.rsplit("::", 1)[1]
        # The URN does not name the parent instance: the child must be one's `<name>-<role>`.
        assert any(child_name.startswith(f"{p}-") for p in parents), (
            f"{urn}: not named <one of {sorted(parents)}>-<role>"
        )


def test_the_program_needs_no_provider_but_kubernetes(any_run: Any) -> None:
    # pulumi-tls and other providers cannot be installed everywhere the program runs;
    # certificates and keys for OPA are not needed (it listens on a Unix socket).
    kinds = {_type_chain(u)[-1] for u in any_run.states}
    foreign = sorted(
        k
        for k in kinds
        if not k.startswith(("ztml:", "kubernetes:", "pulumi:providers:kubernetes"))
    )
    assert foreign == [], foreign


def test_no_private_key_is_declared_but_the_two_serving_keys(any_run: Any) -> None:
    # The webhook's and the model services' serving key come from secret config
    # (infra/tls.py); nothing else the stack declares holds a private key.
    for urn, manifest in any_run.stack().of_kind("Secret").items():
        data = manifest.get("stringData") or {}
        if "ztml:model:ModelService$" in urn and urn.endswith("-tls"):
            assert manifest["type"] == "kubernetes.io/tls"
            assert data["tls.key"] == any_run.config.service_tls.key_pem
            continue
        assert not any("PRIVATE KEY" in str(v) for v in data.values()), urn
    keyed = {
        urn: manifest["stringData"]["tls.key"]
        for urn, manifest in any_run.admission().items()
        if manifest["kind"] == "Secret"
    }
    assert list(keyed.values()) == [any_run.config.admission.tls.key_pem], sorted(keyed)


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
    for urn, manifest in [any_run.model_deployment()]:
        spec = manifest["spec"]["template"]["spec"]
        for container in (*spec.get("initContainers", []), spec["containers"][0]):
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["ZTML_OMS_SIGNERS_DIR"] == "/etc/ztml/oms-signers", urn
            mount = next(m for m in container["volumeMounts"] if m["name"] == "oms-signers")
            assert mount["mountPath"] == "/etc/ztml/oms-signers", urn


def test_issuers_file_is_mounted_into_ztml_home(any_run: Any) -> None:
    for urn, manifest in [any_run.model_deployment()]:
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
