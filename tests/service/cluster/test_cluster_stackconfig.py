"""``ztml cluster config``: the stack configuration made from a home is what the program accepts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from infra.config import parse_config
from service.cluster.layout import CONTEXT
from service.cluster.stackconfig import (
    StackConfigError,
    example_values,
    local_stack_config,
    write_ledger_export,
)

IMAGES = {
    "model-service": "ztml.local/model-service@sha256:" + "a" * 64,
    "opa": "ztml.local/opa@sha256:" + "b" * 64,
    "postgres": "ztml.local/postgres@sha256:" + "c" * 64,
}
DIGEST = "sha256:" + "d" * 64


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from service.stack.provision import ensure_keys_and_issuer

    home = tmp_path / "home"
    monkeypatch.setenv("ZTML_HOME", str(home))
    ensure_keys_and_issuer(home)
    return home


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
    assert not any("PRIVATE" in str(v) for v in values.values())


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
