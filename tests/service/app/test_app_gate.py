"""The deploy gate: only a registered, evaluated, approved, unrevoked artifact may serve."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.app.config import AppConfig, load_config
from service.app.errors import ModelRefusedError
from service.app.gate import verify_model
from tests.service.app.harness import (
    install_demo_model,
    install_unapproved_demo_model,
    serve_until_exit,
)
from tests.service.oms.tampering import ATTACKS, REFUSALS, attack


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_model_source: Path) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    install_demo_model(tmp_path, demo_model_source)
    return tmp_path


def config_for(home: Path, **env: str) -> AppConfig:
    from service.stack.provision import demo_model_dir

    base = {
        "ZTML_HOME": str(home),
        "ZTML_MODEL_PATH": str(demo_model_dir(home) / "model.safetensors"),
    }
    return load_config({**base, **env})


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def signer(home: Path, name: str, identity: str) -> object:
    from service.keys.store import Signer

    return Signer.from_file(home / "keys" / f"{name}.key", identity)


def test_registered_and_approved_model_passes(home: Path) -> None:
    info = verify_model(config_for(home))
    assert info.digest.startswith("sha256:") and info.version


def test_tampered_artifact_is_refused(home: Path) -> None:
    config = config_for(home)
    tamper(config.model_path)
    with pytest.raises(ModelRefusedError) as refused:
        verify_model(config)
    assert any("no register record" in r for r in refused.value.reasons)


def test_pinned_digest_mismatch_is_refused(home: Path) -> None:
    with pytest.raises(ModelRefusedError, match="pinned"):
        verify_model(config_for(home, ZTML_MODEL_DIGEST="sha256:" + "0" * 64))


def test_revoked_model_is_refused(home: Path) -> None:
    from service.ledger import open_ledger

    config = config_for(home)
    digest = verify_model(config).digest
    with open_ledger(home / "ledger.db") as ledger:
        ledger.revoke(digest, signer=signer(home, "approver", "approver@ztml-local"), reason="test")  # type: ignore[arg-type]
    with pytest.raises(ModelRefusedError) as refused:
        verify_model(config)
    assert any("revok" in r for r in refused.value.reasons)


def test_unapproved_model_is_refused(tmp_path: Path, demo_model_source: Path) -> None:
    install_unapproved_demo_model(tmp_path, demo_model_source)
    with pytest.raises(ModelRefusedError) as refused:
        verify_model(config_for(tmp_path))
    assert any("approve" in r for r in refused.value.reasons)


def test_model_signed_by_an_untrusted_key_is_refused(
    home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    trust = tmp_path_factory.mktemp("trust")
    for name in ("approver.pub", "audit.pub", "issuer.pub"):
        shutil.copy2(home / "keys" / name, trust / name)
    shutil.copytree(home / "keys" / "oms_signers", trust / "oms_signers")
    with pytest.raises(ModelRefusedError):
        verify_model(config_for(home, ZTML_TRUST_DIR=str(trust)))


def test_the_signed_demo_model_passes_with_its_bundle(home: Path) -> None:
    config = config_for(home)
    assert (config.model_path.parent / "model.sig").is_file()
    assert verify_model(config).digest.startswith("sha256:")


@pytest.mark.parametrize("name", ATTACKS)
def test_each_oms_attack_is_refused_at_start(name: str, home: Path, tmp_path: Path) -> None:
    config = config_for(home)
    attack(name, config.model_path.parent, scratch=tmp_path / "scratch")
    with pytest.raises(ModelRefusedError) as refused:
        verify_model(config)
    assert any("OMS signature refused" in r and REFUSALS[name] in r for r in refused.value.reasons)


def test_tampered_weights_pinned_to_the_approved_digest_are_refused_at_start(
    home: Path, tmp_path: Path
) -> None:
    digest = verify_model(config_for(home)).digest
    config = config_for(home, ZTML_MODEL_DIGEST=digest)
    attack("weights", config.model_path.parent, scratch=tmp_path / "scratch")
    with pytest.raises(ModelRefusedError) as refused:
        verify_model(config)
    assert any("pinned" in r for r in refused.value.reasons)
    assert any("OMS signature refused" in r for r in refused.value.reasons)


def test_no_trusted_oms_signer_refuses_start(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-signers"
    empty.mkdir()
    with pytest.raises(ModelRefusedError, match="No trusted OMS signer keys"):
        verify_model(config_for(home, ZTML_OMS_SIGNERS_DIR=str(empty)))


@pytest.mark.system
def test_tampered_artifact_stops_bentoml_serve_with_a_clear_line(home: Path) -> None:
    config = config_for(home)
    tamper(config.model_path)
    returncode, output = serve_until_exit(
        home, {"ZTML_MODEL_PATH": str(config.model_path), "ZTML_OPA_URL": "http://127.0.0.1:9"}
    )
    assert returncode == 3, output[-2000:]
    lines = [line for line in output.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, output[-2000:]
    assert "no register record" in lines[0]
    assert "Traceback" not in output


@pytest.mark.system
def test_worker_that_cannot_start_stops_the_server_non_zero(home: Path) -> None:
    config = config_for(home)
    (home / "audit").write_text("not a directory")  # only a worker opens the audit log
    returncode, output = serve_until_exit(home, {"ZTML_MODEL_PATH": str(config.model_path)})
    assert returncode == 3, output[-2000:]
    assert output.count("refusing to start") == 1, output[-2000:]
    assert "audit" in output.split("refusing to start", 1)[1].splitlines()[0]
