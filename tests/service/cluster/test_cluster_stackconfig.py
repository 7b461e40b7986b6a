"""``ztml cluster config``: the stack configuration made from a home is what the program accepts."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from infra.config import StackConfig, parse_config, service_hosts
from service.cluster.layout import CONTEXT
from service.cluster.stackconfig import (
    StackConfigError,
    example_values,
    local_stack_config,
    serving_certificate,
    write_ledger_export,
)
from service.toolchain.paths import POLICIES_DIR

IMAGES = {
    "model-service": "ztml.local/model-service@sha256:" + "a" * 64,
    "opa": "ztml.local/opa@sha256:" + "b" * 64,
    "postgres": "ztml.local/postgres@sha256:" + "c" * 64,
}
DIGEST = "sha256:" + "d" * 64


NODE_IP = "192.0.2.10"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from service.stack.provision import ensure_keys_and_issuer

    home = tmp_path / "home"
    monkeypatch.setenv("ZTML_HOME", str(home))
    monkeypatch.setenv("ZTML_NODE_IP", NODE_IP)
    ensure_keys_and_issuer(home)
    return home


def _parsed(values: dict[str, object]) -> StackConfig:
    return parse_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()})


def test_the_config_fills_every_placeholder_and_the_program_accepts_it(
    home: Path, tmp_path: Path
) -> None:
    values = local_stack_config(home, IMAGES, model_digest=DIGEST, ledger_export=tmp_path / "x")
    config = parse_config(
        {key: v if isinstance(v, str) else json.dumps(v) for key, v in values.items()}
    )
    assert config.kube_context == CONTEXT
    assert config.image == IMAGES["model-service"]
    assert config.opa_image == IMAGES["opa"]
    assert config.model_digest == DIGEST
    assert config.storage_class == "local-path"
    assert len(config.trust_keys) == 2 and config.oms_signer_keys
    # The only private keys: the webhook's and the service port's serving keys (Pulumi
    # secrets in the stack), both issued by the home's local CA for the names clients dial.
    private = sorted(k for k, v in values.items() if "PRIVATE" in str(v))
    assert private == ["ztml:admissionTlsKey", "ztml:serviceTlsKey"]
    assert config.service_tls is not None
    assert config.service_tls.hosts == service_hosts("ztml")
    assert config.service_tls.ca_bundle_pem == (home / "cluster-ca" / "ca.crt").read_text()


def test_every_other_value_is_the_k3d_examples(home: Path, tmp_path: Path) -> None:
    values = local_stack_config(home, IMAGES, model_digest=DIGEST, ledger_export=tmp_path / "x")
    for key, value in example_values().items():
        if "0000000000" in str(value) or key in ("target", "storageClass", "ledgerExport"):
            continue
        assert values[f"ztml:{key}"] == value, key


def test_a_missing_image_names_the_command_that_imports_it(home: Path, tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match="ztml cluster images"):
        local_stack_config(
            home, {"opa": IMAGES["opa"]}, model_digest=DIGEST, ledger_export=tmp_path / "x"
        )


def test_missing_keys_name_the_command_that_makes_them(tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match="ztml keys init"):
        local_stack_config(
            tmp_path / "empty", IMAGES, model_digest=DIGEST, ledger_export=tmp_path / "x"
        )


def test_a_ledger_that_does_not_verify_writes_no_export(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.json"
    (home / "ledger.db").write_bytes(b"not a ledger")
    with pytest.raises(StackConfigError):
        write_ledger_export(home, out)
    assert not out.exists()
    assert os.path.exists(home / "ledger.db")


def test_a_scaled_out_config_gets_its_own_postgres_password(home: Path, tmp_path: Path) -> None:
    one = local_stack_config(
        home, IMAGES, model_digest=DIGEST, ledger_export=tmp_path / "x", replicas=2
    )
    two = local_stack_config(
        home, IMAGES, model_digest=DIGEST, ledger_export=tmp_path / "x", replicas=2
    )
    config = parse_config(
        {key: v if isinstance(v, str) else json.dumps(v) for key, v in one.items()}
    )
    assert config.uses_postgres and config.postgres_image == IMAGES["postgres"]
    assert one["ztml:postgresPassword"] != two["ztml:postgresPassword"]


def test_the_config_turns_the_admission_webhook_on_for_this_node(
    home: Path, tmp_path: Path
) -> None:
    values = local_stack_config(home, IMAGES, model_digest=DIGEST, ledger_export=tmp_path / "x")
    settings = _parsed(values).admission
    assert settings is not None
    assert settings.namespace == "ztml-admission"
    # The API server is a process on this node: its own address, and the pod bridge's
    # address that kube-proxy masquerades its Service traffic to.
    assert settings.api_server_cidrs == (f"{NODE_IP}/32", "10.244.0.1/32")
    assert settings.tls.hosts == ("ztml-admission.ztml-admission.svc",)


def test_the_webhook_admits_the_local_images_registry_on_top_of_the_policy_data(
    home: Path, tmp_path: Path
) -> None:
    values = local_stack_config(home, IMAGES, model_digest=DIGEST, ledger_export=tmp_path / "x")
    settings = _parsed(values).admission
    assert settings is not None
    registries = settings.parameters["allowed_registries"]
    repository = json.loads((POLICIES_DIR / "data" / "admission.json").read_text())
    assert registries == [*repository["admission"]["allowed_registries"], "ztml.local/"]
    assert set(settings.parameters) == {"allowed_registries"}


def test_the_local_ca_is_made_once_with_private_keys_for_the_owner_only(home: Path) -> None:
    first = serving_certificate(home, "ztml-admission.ztml-admission.svc")
    again = serving_certificate(home, "ztml-admission.ztml-admission.svc")
    assert again == first
    directory = home / "cluster-ca"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    keys = sorted(directory.glob("*.key"))
    assert len(keys) == 2
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)


def test_another_host_gets_its_own_certificate_from_the_same_ca(home: Path) -> None:
    one = serving_certificate(home, "ztml-admission.ztml-admission.svc")
    other = serving_certificate(home, "ztml-admission.prod-admission.svc")
    assert other.ca_pem == one.ca_pem
    assert other.cert_pem != one.cert_pem
    cert = x509.load_pem_x509_certificate(other.cert_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["ztml-admission.prod-admission.svc"]


def test_a_ca_due_for_renewal_is_replaced_with_its_certificates(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.cluster.stackconfig as stackconfig

    first = serving_certificate(home, "ztml-admission.ztml-admission.svc")
    monkeypatch.setattr(stackconfig, "RENEW_BEFORE", dt.timedelta(days=400))
    renewed = serving_certificate(home, "ztml-admission.ztml-admission.svc")
    assert renewed.ca_pem != first.ca_pem
    assert renewed.key_pem != first.key_pem


def test_packages_become_models_the_program_accepts_with_one_certificate_for_all(
    home: Path, tmp_path: Path
) -> None:
    from service.cluster.stackconfig import package_models
    from service.ledger import hash_artifact
    from tests.service.model.packages import contract_doc, write_package

    package = write_package(tmp_path / "pkg", contract={**contract_doc(), "name": "tabular"})
    models = package_models([package])
    assert models == [
        {"name": "tabular", "digest": hash_artifact(package / "model.safetensors")[0]}
    ]
    values = local_stack_config(
        home, IMAGES, model_digest=DIGEST, ledger_export=tmp_path / "x", models=models
    )
    config = _parsed(values)
    assert [(m.name, m.digest) for m in config.models] == [("tabular", models[0]["digest"])]
    assert config.service_tls is not None
    assert config.service_tls.hosts == service_hosts("ztml", "tabular")


def test_a_certificate_is_reissued_when_the_names_it_must_carry_change(home: Path) -> None:
    first = serving_certificate(home, *service_hosts("ztml"))
    again = serving_certificate(home, *service_hosts("ztml"))
    assert again.cert_pem == first.cert_pem
    widened = serving_certificate(home, *service_hosts("ztml", "tabular"))
    cert = x509.load_pem_x509_certificate(widened.cert_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == set(service_hosts("ztml", "tabular"))
