"""The stack configuration: one typed place; a bad value names the key and accepted values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import PLACEHOLDER_DIGEST, ConfigError, parse_config
from service.gate import load_requirements

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw(raw_values: dict[str, str]) -> dict[str, str]:
    return raw_values


def _with(raw: dict[str, str], **values: Any) -> dict[str, str]:
    out = dict(raw)
    for key, value in values.items():
        if value is None:
            out.pop(f"ztml:{key}", None)
        else:
            out[f"ztml:{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def test_valid_config_is_typed(raw: dict[str, str]) -> None:
    config = parse_config(raw)
    assert config.replicas == 1
    assert config.kube_context == "k3d-ztml"
    assert config.requirements.min_robust_accuracy == 0.8
    assert config.uses_postgres is False


def test_target_other_than_k3d_is_a_kubeconfig_context(raw: dict[str, str]) -> None:
    assert parse_config(_with(raw, target="gke_proj_zone_prod")).kube_context == (
        "gke_proj_zone_prod"
    )


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("image", "ghcr.io/ztml/model:latest", "pinned by digest"),
        ("image", "ghcr.io/ztml/model@sha256:abc", "pinned by digest"),
        ("image", f"ghcr.io/ztml/model@{PLACEHOLDER_DIGEST}", "placeholder"),
        ("opaImage", "docker.io/openpolicyagent/opa:1.22.2", "pinned by digest"),
        ("modelDigest", "sha256:ABC", "sha256:<64 lowercase hex>"),
        ("modelDigest", PLACEHOLDER_DIGEST, "placeholder"),
        ("replicas", "0", "from 1 to 20"),
        ("replicas", "21", "from 1 to 20"),
        ("replicas", "two", "from 1 to 20"),
        ("maxReplicas", "3", "1 while"),
        ("minRobustAccuracy", "1.5", "from 0 to 1"),
        ("epsilon", "0", "(0, 1]"),
        ("namespace", "Not_A_Label", "DNS label"),
        ("opaTls", "mtls", "pulumi config rm opaTls"),
        ("storageClass", "Fast SSD", "StorageClass name"),
        ("storageSize", "lots", "1Gi"),
        ("trainerKeyIds", ["alice"], "ed25519:<16 hex>"),
        ("approverKeyIds", [], "ed25519:<16 hex>"),
        ("trustedIssuers", [{"iss": "x"}], "iss, kid and publicKey"),
        ("trustedIssuers", [], "at least one issuer"),
        ("ledgerTrustKeys", [{"keyId": "nope", "publicKey": "x"}], "keyId"),
        ("omsSignerKeys", [], "at least one PEM public key"),
        ("omsSignerKeys", ["not a key"], "a PEM public key"),
        ("clientNamespaces", ["Bad Name"], "namespace names"),
    ],
)
def test_bad_value_names_the_key_and_accepted_values(
    raw: dict[str, str], key: str, value: Any, accepted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with(raw, **{key: value}))
    assert f"ztml:{key}" in str(info.value)
    assert accepted in str(info.value)


@pytest.mark.parametrize("key", ["image", "opaImage", "modelDigest", "ledgerExport"])
def test_missing_required_value_is_named(raw: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"ztml:{key}"):
        parse_config(_with(raw, **{key: None}))


def test_issuer_key_must_be_a_pem_public_key(raw: dict[str, str]) -> None:
    issuers = [{"iss": "i", "kid": "k", "publicKey": "-----BEGIN PRIVATE KEY-----\nAAAA\n"}]
    with pytest.raises(ConfigError, match=r"trustedIssuers\[0\]\.publicKey"):
        parse_config(_with(raw, trustedIssuers=issuers))


def test_oms_signer_keys_must_be_elliptic_curve_keys(raw: dict[str, str]) -> None:
    ledger_key = json.loads(raw["ztml:ledgerTrustKeys"])[0]["publicKey"]  # Ed25519
    with pytest.raises(ConfigError, match=r"omsSignerKeys\[0\]: .*elliptic-curve"):
        parse_config(_with(raw, omsSignerKeys=[ledger_key]))


def test_oms_signer_keys_are_required(raw: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="ztml:omsSignerKeys"):
        parse_config(_with(raw, omsSignerKeys=None))


def test_role_key_ids_need_a_trust_key(raw: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="no public key in ztml:ledgerTrustKeys"):
        parse_config(_with(raw, approverKeyIds=["ed25519:" + "e" * 16]))


def test_issuer_algorithm_is_checked(raw: dict[str, str]) -> None:
    issuers = json.loads(raw["ztml:trustedIssuers"])
    issuers[0]["alg"] = "HS256"
    with pytest.raises(ConfigError, match="EdDSA, ES256"):
        parse_config(_with(raw, trustedIssuers=issuers))


def test_several_replicas_need_postgres_image_and_password(raw: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="ztml:postgresPassword"):
        parse_config(_with(raw, replicas="3"))
    with pytest.raises(ConfigError, match="ztml:postgresImage"):
        parse_config(_with(raw, replicas="3", postgresPassword="x" * 20))


def _stack_raw(name: str, raw: dict[str, str]) -> dict[str, str]:
    stack = yaml.safe_load((REPO / f"Pulumi.{name}.yaml").read_text())["config"]
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in stack.items()}
    # Set with `pulumi config set` as infra/README.md shows, not kept in the example file.
    keys = (
        "ztml:trustedIssuers",
        "ztml:ledgerTrustKeys",
        "ztml:omsSignerKeys",
        "ztml:apiServerCidrs",
        "ztml:admissionTlsCert",
        "ztml:admissionTlsKey",
        "ztml:admissionCaBundle",
        "ztml:serviceTlsCert",
        "ztml:serviceTlsKey",
        "ztml:serviceCaBundle",
    )
    secrets = {k: raw[k] for k in keys}
    return {**values, **secrets, "ztml:postgresPassword": "a-long-enough-password"}


@pytest.mark.parametrize("stack", ["k3d", "cloud"])
def test_example_stack_placeholders_are_refused_by_name(raw: dict[str, str], stack: str) -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        parse_config(_stack_raw(stack, raw))


@pytest.mark.parametrize("stack", ["k3d", "cloud"])
def test_example_stack_is_valid_once_placeholders_are_replaced(
    raw: dict[str, str], stack: str
) -> None:
    values = {
        k: v.replace(PLACEHOLDER_DIGEST, "sha256:" + "d4" * 32)
        for k, v in _stack_raw(stack, raw).items()
    }
    values["ztml:trainerKeyIds"] = raw["ztml:trainerKeyIds"]
    values["ztml:approverKeyIds"] = raw["ztml:approverKeyIds"]
    config = parse_config(values)
    assert config.replicas == (1 if stack == "k3d" else 3)


def test_every_config_key_is_documented() -> None:
    from infra.config import CONFIG_KEYS

    readme = (REPO / "infra" / "README.md").read_text()
    missing = [key for key in CONFIG_KEYS if f"`{key}`" not in readme]
    assert not missing, f"undocumented config keys: {missing}"


def test_stack_config_is_read_from_the_pulumi_engine_environment(
    raw: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pulumi.runtime

    from infra.config import read_stack_config

    # The language host hands config over as PULUMI_CONFIG (a JSON object of strings).
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({**raw, "ztml:replicas": "1"}))
    pulumi.runtime.set_all_config({})
    try:
        assert read_stack_config() == parse_config(raw)
        monkeypatch.setenv("PULUMI_CONFIG", json.dumps({**raw, "ztml:replicas": "0"}))
        with pytest.raises(ConfigError, match="ztml:replicas"):
            read_stack_config()
    finally:
        pulumi.runtime.set_all_config({})


def test_gate_requirements_default_to_the_policy_data(raw: dict[str, str]) -> None:
    assert parse_config(raw).requirements == load_requirements()
    overridden = parse_config(_with(raw, minSteps="400", minRestarts="40")).requirements
    assert (overridden.min_steps, overridden.min_restarts) == (400, 40)
    assert overridden.min_robust_accuracy == load_requirements().min_robust_accuracy


def test_stack_requirements_override_the_defaults_and_keep_the_modality_overrides(
    raw: dict[str, str],
) -> None:
    overridden = parse_config(_with(raw, epsilon="0.2", minRobustAccuracy="0.9")).requirements
    assert overridden.by_modality == load_requirements().by_modality
    assert (overridden.for_modality("image").epsilon, overridden.epsilon) == (0.2, 0.2)
    tabular = overridden.for_modality("tabular")
    assert (tabular.epsilon, tabular.min_robust_accuracy) == (0.05, 0.9)


def test_gate_attack_other_than_the_worst_case_is_refused(raw: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="ztml:attack"):
        parse_config(_with(raw, attack="pgd"))


def test_witness_keys_default_to_none_required(raw: dict[str, str]) -> None:
    assert parse_config(raw).ledger_witness_keys == ()


def test_witness_keys_are_cosignature_vkeys(raw: dict[str, str]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from service.chain.note import ED25519, Verifier
    from service.chain.tlog import witness_verifier

    public = Ed25519PrivateKey.generate().public_key()
    vkey = witness_verifier("w.example/1", public).vkey()
    assert parse_config(_with(raw, ledgerWitnessKeys=[vkey])).ledger_witness_keys == (vkey,)
    log_key = Verifier("w.example/1", ED25519, public).vkey()
    for bad in (["not-a-vkey"], [log_key], [7], [vkey, vkey]):
        with pytest.raises(ConfigError, match=r"ztml:ledgerWitnessKeys.*accepted values"):
            parse_config(_with(raw, ledgerWitnessKeys=bad))
