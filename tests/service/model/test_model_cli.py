"""``ztml model``: help, a tiny training run writing complete metrics, evaluate, register."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.main import app as ztml_app
from service.model.artifact import file_digest
from service.model.cli import app
from tests.service.oms.tampering import OmsKeys, make_keys

runner = CliRunner()
METRICS_KEYS = {
    "model",
    "training_data_digest",
    "code_revision",
    "hyperparameters",
    "evaluation",
    "training_seconds",
}


@pytest.fixture(scope="module")
def oms_keys(tmp_path_factory: pytest.TempPathFactory) -> OmsKeys:
    return make_keys(tmp_path_factory.mktemp("oms"))


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory, oms_keys: OmsKeys) -> Path:
    """A tiny model directory, signed with ``ztml model sign``."""
    out = tmp_path_factory.mktemp("models")
    result = runner.invoke(
        app, ["train", "--defense", "none", "--profile", "tiny", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    signed = runner.invoke(app, ["sign", str(out / "none"), "--key", str(oms_keys.key)])
    assert signed.exit_code == 0, signed.output
    return out / "none"


def test_model_help_lists_the_commands() -> None:
    result = runner.invoke(ztml_app, ["model", "--help"])
    assert result.exit_code == 0
    for command in ("train", "evaluate", "sign", "register"):
        assert command in result.output


@pytest.mark.parametrize("command", ["train", "evaluate", "sign", "register"])
def test_each_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


@pytest.mark.slow
def test_train_writes_artifact_and_complete_metrics(trained_dir: Path) -> None:
    metrics = json.loads((trained_dir / "metrics.json").read_text())
    assert set(metrics) >= METRICS_KEYS
    assert metrics["model"] == {
        "name": "digits-mlp",
        "version": "1.0.0+none.tiny",
        "defense": "none",
        "format": "safetensors",
    }
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", metrics["training_data_digest"])
    assert metrics["artifact"]["digest"] == file_digest(trained_dir / "model.safetensors")
    evaluation = metrics["evaluation"]
    assert evaluation["dataset"] == "sklearn-digits/test"
    assert 0.9 <= evaluation["clean_accuracy"] <= 1.0
    pgd = [r for r in evaluation["robust"] if r["attack"] == "pgd"]
    assert {r["epsilon"] for r in pgd} == {0.05, 0.1, 0.2, 0.3}
    for entry in evaluation["robust"]:
        assert set(entry) == {"attack", "norm", "epsilon", "steps", "restarts", "accuracy"}
        assert entry["norm"] == "linf"
    assert isinstance(metrics["training_seconds"], float)


@pytest.mark.slow
def test_evaluate_prints_json_for_an_artifact(trained_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(trained_dir / "model.safetensors"),
            "--json",
            "--steps",
            "5",
            "--restarts",
            "1",
            "--no-autoattack",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["digest"] == file_digest(trained_dir / "model.safetensors")
    assert doc["evaluation"]["clean_accuracy"] > 0.9
    attacks = {r["attack"] for r in doc["evaluation"]["robust"]}
    assert attacks == {"fgsm", "pgd-ce", "pgd-cw", "pgd"}


def test_evaluate_help_states_the_gate_defaults() -> None:
    result = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--no-autoattack" in result.output
    assert re.search(r"--steps\s.*default: 100", result.output), result.output
    assert re.search(r"--restarts\s.*default: 10\b", result.output), result.output


def test_evaluate_of_a_corrupt_artifact_fails_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 4)
    result = runner.invoke(app, ["evaluate", str(bad)])
    assert result.exit_code == 1
    assert "truncated" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_register_refuses_metrics_of_another_artifact(
    trained_dir: Path, tmp_path: Path, oms_keys: OmsKeys
) -> None:
    metrics = json.loads((trained_dir / "metrics.json").read_text())
    metrics["artifact"]["digest"] = "sha256:" + "0" * 64
    other = tmp_path / "metrics.json"
    other.write_text(json.dumps(metrics))
    artifact = str(trained_dir / "model.safetensors")
    trusted = ["--oms-signers", str(oms_keys.signers)]
    result = runner.invoke(app, ["register", artifact, "--metrics", str(other), *trusted])
    assert result.exit_code == 1
    assert "describes artifact sha256:000" in " ".join(result.output.split())


@pytest.mark.slow
def test_register_writes_a_signed_ledger_record(
    trained_dir: Path, tmp_path: Path, oms_keys: OmsKeys
) -> None:
    from service.keys.store import init_keys
    from service.ledger import open_ledger

    keys = tmp_path / "keys"
    init_keys(keys, ["trainer"])
    ledger = tmp_path / "ledger.db"
    result = runner.invoke(
        app,
        [
            "register",
            str(trained_dir / "model.safetensors"),
            "--metrics",
            str(trained_dir / "metrics.json"),
            "--ledger",
            str(ledger),
            "--key",
            str(keys / "trainer.key"),
            "--identity",
            "alice@example",
            "--oms-signers",
            str(oms_keys.signers),
        ],
    )
    assert result.exit_code == 0, result.output
    with open_ledger(str(ledger)) as opened:
        (record,) = list(opened.records())
    assert record.type == "register"
    assert record.model_digest == file_digest(trained_dir / "model.safetensors")
    assert record.identity == "alice@example"
    assert record.payload["evaluation"]["clean_accuracy"] > 0.9
    assert record.payload["oms_bundle"]["digest"] == file_digest(trained_dir / "model.sig")


@pytest.mark.slow
def test_register_with_a_missing_key_fails_cleanly(
    trained_dir: Path, tmp_path: Path, oms_keys: OmsKeys
) -> None:
    result = runner.invoke(
        app,
        [
            "register",
            str(trained_dir / "model.safetensors"),
            "--metrics",
            str(trained_dir / "metrics.json"),
            "--ledger",
            str(tmp_path / "l.db"),
            "--key",
            str(tmp_path / "absent.key"),
            "--oms-signers",
            str(oms_keys.signers),
        ],
    )
    assert result.exit_code == 1
    assert "registration failed" in result.output


def test_sign_writes_a_bundle_beside_the_weights(tmp_path: Path, oms_keys: OmsKeys) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights")
    (model_dir / "metrics.json").write_text("{}")
    result = runner.invoke(app, ["sign", str(model_dir), "--key", str(oms_keys.key)])
    assert result.exit_code == 0, result.output
    assert (model_dir / "model.sig").is_file()
    assert "metrics.json, model.safetensors" in " ".join(result.output.split())


def test_sign_without_a_key_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    result = runner.invoke(app, ["sign", str(tmp_path / "model.safetensors")])
    assert result.exit_code == 1
    assert "ztml keys init" in " ".join(result.output.split())
    assert not (tmp_path / "model.sig").exists()
