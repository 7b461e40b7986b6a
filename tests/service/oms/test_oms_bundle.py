"""OMS bundles: ztml signs, ztml and the library verify, every attack is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.oms import (
    BUNDLE_NAME,
    OmsBundleError,
    OmsModelError,
    OmsUntrustedSignerError,
    OmsVerificationError,
    TrustedSigners,
    bundle_path,
    parse_bundle,
    sign_model,
    verify_model_bundle,
)
from tests.service.oms.tampering import ATTACKS, REFUSALS, OmsKeys, attack, make_keys

LIBRARY_CLI = [sys.executable, "-m", "model_signing"]


@pytest.fixture
def keys(tmp_path: Path) -> OmsKeys:
    return make_keys(tmp_path / "trusted")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model directory: weights and the contract beside them."""
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(os.urandom(4096))
    (directory / "metrics.json").write_text(json.dumps({"model": {"version": "1.0.0"}}))
    return directory


def _signers(keys: OmsKeys) -> TrustedSigners:
    return TrustedSigners.from_directory(keys.signers)


def _library(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the library's own CLI (``python -m model_signing ...``)."""
    return subprocess.run(
        [*LIBRARY_CLI, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def _library_verify(
    model: Path, bundle: Path, public_key: Path
) -> subprocess.CompletedProcess[str]:
    return _library("verify", "key", model, "--signature", bundle, "--public_key", public_key)


def test_sign_then_verify_round_trip_covers_every_file(model_dir: Path, keys: OmsKeys) -> None:
    written = sign_model(model_dir, key=keys.key)
    verified = verify_model_bundle(model_dir / "model.safetensors", signers=_signers(keys))
    assert written.path == model_dir / BUNDLE_NAME == bundle_path(model_dir)
    assert set(written.files) == {"model.safetensors", "metrics.json"}
    assert verified.bundle == written
    assert verified.model_path == model_dir
    assert verified.signer == keys.signers / "oms-signer.pub"


def test_signed_weights_digest_is_the_ledger_digest(model_dir: Path, keys: OmsKeys) -> None:
    from service.ledger import hash_artifact

    artifact = model_dir / "model.safetensors"
    bundle = sign_model(model_dir, key=keys.key)
    assert bundle.signed_digest(artifact) == hash_artifact(artifact)[0]


@pytest.mark.parametrize("name", ATTACKS)
def test_each_attack_is_refused(name: str, model_dir: Path, keys: OmsKeys, tmp_path: Path) -> None:
    sign_model(model_dir, key=keys.key)
    attack(name, model_dir, scratch=tmp_path)
    with pytest.raises((OmsVerificationError, OmsUntrustedSignerError)) as refused:
        verify_model_bundle(model_dir / "model.safetensors", signers=_signers(keys))
    assert REFUSALS[name] in str(refused.value)


def test_an_added_file_is_refused(model_dir: Path, keys: OmsKeys) -> None:
    sign_model(model_dir, key=keys.key)
    (model_dir / "extra.py").write_text("import os\n")
    with pytest.raises(OmsVerificationError, match=r"not signed: extra\.py"):
        verify_model_bundle(model_dir / "model.safetensors", signers=_signers(keys))


def test_a_missing_bundle_names_the_fix(model_dir: Path, keys: OmsKeys) -> None:
    with pytest.raises(OmsBundleError, match="ztml model sign"):
        verify_model_bundle(model_dir / "model.safetensors", signers=_signers(keys))


def test_a_bundle_that_is_not_json_is_refused(model_dir: Path, keys: OmsKeys) -> None:
    (model_dir / BUNDLE_NAME).write_text("{not json")
    with pytest.raises(OmsBundleError, match="not an OMS bundle"):
        verify_model_bundle(model_dir / "model.safetensors", signers=_signers(keys))


def test_a_missing_artifact_is_refused(model_dir: Path, keys: OmsKeys) -> None:
    with pytest.raises(OmsModelError, match="does not exist"):
        verify_model_bundle(model_dir / "absent.safetensors", signers=_signers(keys))


def test_a_single_file_is_signed_alone(model_dir: Path, keys: OmsKeys) -> None:
    artifact = model_dir / "model.safetensors"
    bundle = sign_model(artifact, key=keys.key)
    assert bundle.single_file and bundle.path == model_dir / BUNDLE_NAME
    (model_dir / "metrics.json").write_text("{}")  # not part of a single-file signature
    assert verify_model_bundle(artifact, signers=_signers(keys)).model_path == artifact


def test_a_bundle_leaving_the_contract_unsigned_is_refused(model_dir: Path, keys: OmsKeys) -> None:
    result = _library(
        "sign", "key", model_dir, "--private_key", keys.key,
        "--signature", model_dir / BUNDLE_NAME, "--ignore-paths", model_dir / "metrics.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with pytest.raises(OmsVerificationError, match=r"leaves metrics\.json unsigned"):
        verify_model_bundle(model_dir / "model.safetensors", signers=_signers(keys))


@pytest.mark.slow
def test_the_library_cli_verifies_a_ztml_bundle(model_dir: Path, keys: OmsKeys) -> None:
    bundle = sign_model(model_dir, key=keys.key)
    result = _library_verify(model_dir, bundle.path, keys.signers / "oms-signer.pub")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification succeeded" in result.stdout


@pytest.mark.slow
def test_the_library_cli_refuses_a_tampered_ztml_bundle(
    model_dir: Path, keys: OmsKeys, tmp_path: Path
) -> None:
    bundle = sign_model(model_dir, key=keys.key)
    attack("contract", model_dir, scratch=tmp_path)
    result = _library_verify(model_dir, bundle.path, keys.signers / "oms-signer.pub")
    assert result.returncode != 0
    assert "Verification failed" in result.stderr


@pytest.mark.slow
def test_a_model_signed_elsewhere_by_a_trusted_key_verifies(
    model_dir: Path, tmp_path: Path
) -> None:
    elsewhere = make_keys(tmp_path / "elsewhere")  # the signer's key; its .pub is trusted
    result = _library(
        "sign", "key", model_dir, "--private_key", elsewhere.key,
        "--signature", model_dir / BUNDLE_NAME,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trusted = TrustedSigners.from_directory(elsewhere.signers)
    verified = verify_model_bundle(model_dir / "model.safetensors", signers=trusted)
    assert verified.bundle == parse_bundle(model_dir / BUNDLE_NAME)
