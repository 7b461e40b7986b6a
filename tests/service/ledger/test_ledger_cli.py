"""``ztml ledger``: the commands, their defaults and their errors."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli.main import app
from service.keys.store import init_keys
from service.model.artifact import save_model
from service.model.metrics import evaluation_document, robust_entry
from service.model.net import DigitsNet
from service.oms import init_signing_key, sign_model

runner = CliRunner()

METRICS: dict[str, Any] = {
    "model": {"name": "digits-mlp", "version": "7", "defense": "pgd", "format": "safetensors"},
    "training_data_digest": "sha256:" + "a" * 64,
    "code_revision": "abc1234",
    "hyperparameters": {"lr": 0.001, "epochs": 30},
    "evaluation": evaluation_document(
        dataset="sklearn-digits/test",
        clean_accuracy=0.97,
        robust=[
            robust_entry(attack="worst-case", epsilon=0.1, steps=100, restarts=10, accuracy=0.83)
        ],
    ),
    "training_seconds": 12.0,
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    monkeypatch.delenv("ZTML_LEDGER_URL", raising=False)
    init_keys(tmp_path / "keys")
    artifact = tmp_path / "model.safetensors"
    digest = save_model(DigitsNet(), artifact, metadata={"version": "7", "defense": "pgd"})
    described = {"digest": digest, "format": "safetensors", "size": artifact.stat().st_size}
    (tmp_path / "metrics.json").write_text(json.dumps({**METRICS, "artifact": described}))
    sign_model(artifact, key=init_signing_key(tmp_path / "keys").private_path)  # the file alone
    return tmp_path


def _digest(home: Path) -> str:
    return "sha256:" + hashlib.sha256((home / "model.safetensors").read_bytes()).hexdigest()


def ztml(*args: str) -> Any:
    return runner.invoke(app, ["ledger", *args])


def _out(result: Any) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _register(home: Path) -> Any:
    return ztml(
        "register", str(home / "model.safetensors"), "--metrics", str(home / "metrics.json")
    )


def test_init_creates_the_default_ledger(home: Path) -> None:
    result = ztml("init")
    assert result.exit_code == 0, result.output
    assert (home / "ledger.db").is_file()


def test_init_refuses_a_non_empty_ledger(home: Path) -> None:
    ztml("init")
    _register(home)
    before = (home / "ledger.db").stat().st_size
    result = ztml("init")
    assert result.exit_code == 1 and "already exists" in _out(result)
    assert (home / "ledger.db").stat().st_size == before


def test_register_approve_show_verify(home: Path) -> None:
    ztml("init")
    registered = _register(home)
    assert registered.exit_code == 0, registered.output
    assert _digest(home) in _out(registered).replace("\n", "")
    approved = ztml("approve", _digest(home)[:20], "--comment", "looks good")
    assert approved.exit_code == 0, approved.output
    shown = ztml("show")
    assert shown.exit_code == 0 and "approved" in _out(shown)
    verified = ztml("verify")
    assert verified.exit_code == 0 and "ledger intact" in _out(verified)


def test_register_uses_trainer_key_and_host_identity(home: Path) -> None:
    _register(home)
    exported = json.loads(ztml("export").stdout)
    signer = exported["records"][0]["signer"]
    assert signer["identity"].startswith("trainer@")
    trainer_pub = (home / "keys" / "trainer.pub").read_text()
    assert trainer_pub and signer["key_id"].startswith("ed25519:")


def test_approve_with_the_trainer_key_is_refused(home: Path) -> None:
    _register(home)
    result = ztml("approve", _digest(home), "--key", str(home / "keys" / "trainer.key"))
    assert result.exit_code == 1 and "cannot be approved" in _out(result)


def test_approve_of_unknown_digest_names_it(home: Path) -> None:
    _register(home)
    result = ztml("approve", "sha256:" + "f" * 64)
    assert result.exit_code == 1 and "not registered" in _out(result)
    assert "Traceback" not in _out(result)


def test_revoked_model_shows_revoked_and_cannot_be_approved(home: Path) -> None:
    _register(home)
    assert ztml("revoke", _digest(home), "--reason", "data leak").exit_code == 0
    assert "revoked" in _out(ztml("show", _digest(home)))
    result = ztml("approve", _digest(home))
    assert result.exit_code == 1 and "revoked" in _out(result)


def test_missing_artifact_is_a_clear_error(home: Path) -> None:
    result = ztml("register", str(home / "absent.bin"), "--metrics", str(home / "metrics.json"))
    assert result.exit_code == 1 and "does not exist" in _out(result)
    assert not (home / "ledger.db").exists()
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_corrupt_metrics_is_a_clear_error(home: Path) -> None:
    (home / "metrics.json").write_text('{"model": ')
    result = _register(home)
    assert result.exit_code == 1 and "not valid JSON" in _out(result)


def test_metrics_naming_another_artifact_are_refused(home: Path) -> None:
    metrics = json.loads((home / "metrics.json").read_text())
    metrics["artifact"]["digest"] = "sha256:" + "0" * 64
    (home / "metrics.json").write_text(json.dumps(metrics))
    result = _register(home)
    assert result.exit_code == 1 and "not the right one" in _out(result)


def test_artifact_that_is_not_a_verified_model_is_refused(home: Path) -> None:
    (home / "model.safetensors").write_bytes(os.urandom(50_000))
    result = _register(home)
    assert result.exit_code == 1 and "model.safetensors" in _out(result)
    assert not (home / "ledger.db").exists()


def test_key_with_loose_permissions_is_refused(home: Path) -> None:
    (home / "keys" / "trainer.key").chmod(0o644)
    result = _register(home)
    assert result.exit_code == 1 and "chmod 600" in _out(result)
    assert not (home / "ledger.db").exists() or ztml("export").stdout.count('"seq"') == 0


def test_unreadable_key_file_is_refused(home: Path) -> None:
    bogus = home / "keys" / "bogus.key"
    bogus.write_text("not a key")
    bogus.chmod(0o600)
    result = ztml(
        "register",
        str(home / "model.safetensors"),
        "--metrics",
        str(home / "metrics.json"),
        "--key",
        str(bogus),
    )
    assert result.exit_code == 1 and "not a PEM Ed25519 key" in _out(result)


def test_verify_names_the_first_tampered_record(home: Path) -> None:
    _register(home)
    ztml("approve", _digest(home), "--comment", "ok")
    with sqlite3.connect(home / "ledger.db") as conn:
        conn.execute("UPDATE ledger SET record = replace(record, 'abc1234', 'evil123')")
    result = ztml("verify")
    assert result.exit_code == 1
    assert "FAILED at seq 0" in _out(result) and "hash mismatch" in _out(result)


def test_verify_of_a_missing_ledger_does_not_create_it(home: Path) -> None:
    result = ztml("verify")
    assert result.exit_code == 1 and "ztml ledger init" in _out(result)
    assert not (home / "ledger.db").exists()


def test_verify_detects_truncation_with_a_checkpoint(home: Path) -> None:
    _register(home)
    ztml("approve", _digest(home))
    assert ztml("checkpoint", "--out", str(home / "cp.json")).exit_code == 0
    with sqlite3.connect(home / "ledger.db") as conn:
        conn.execute("DELETE FROM ledger WHERE seq = 1")
    result = ztml("verify", "--checkpoint", str(home / "cp.json"))
    assert result.exit_code == 1 and "truncated" in _out(result)


def test_export_is_verified_and_verifies_offline(home: Path) -> None:
    _register(home)
    out = home / "export.json"
    assert ztml("export", "--out", str(out)).exit_code == 0
    document = json.loads(out.read_text())
    assert document["verified"] is True and len(document["records"]) == 1
    checked = ztml("verify-export", str(out), "--trust", str(home / "keys"))
    assert checked.exit_code == 0, checked.output


def test_export_of_a_tampered_ledger_writes_nothing(home: Path) -> None:
    _register(home)
    with sqlite3.connect(home / "ledger.db") as conn:
        conn.execute("UPDATE ledger SET record = replace(record, 'abc1234', 'evil123')")
    out = home / "export.json"
    result = ztml("export", "--out", str(out))
    assert result.exit_code == 1 and not out.exists()


def test_verify_with_an_unrelated_trust_dir_names_the_unknown_key(
    home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _register(home)
    other = tmp_path_factory.mktemp("other-keys")
    init_keys(other / "keys", ["someone"])
    result = ztml("verify", "--trust", str(other / "keys"))
    assert result.exit_code == 1 and "unknown key" in _out(result)


def test_ledger_option_selects_another_file(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "l.db"
    assert ztml("init", "--ledger", str(other)).exit_code == 0
    assert other.is_file() and not (home / "ledger.db").exists()


def test_evaluate_records_new_results(home: Path) -> None:
    _register(home)
    evaluation = {**METRICS["evaluation"], "clean_accuracy": 0.99}
    (home / "eval.json").write_text(json.dumps(evaluation))
    result = ztml("evaluate", _digest(home), "--metrics", str(home / "eval.json"))
    assert result.exit_code == 0, result.output
    records = json.loads(ztml("export").stdout)["records"]
    assert [r["type"] for r in records] == ["register", "evaluate"]
    assert records[1]["payload"]["evaluation"]["clean_accuracy"] == 0.99


def test_evaluate_with_malformed_results_is_refused(home: Path) -> None:
    _register(home)
    (home / "eval.json").write_text(json.dumps({"clean_accuracy": "high"}))
    result = ztml("evaluate", _digest(home), "--metrics", str(home / "eval.json"))
    assert result.exit_code == 1 and "malformed" in _out(result)


def test_corrupt_public_key_in_trust_dir_is_a_clear_error(home: Path) -> None:
    _register(home)
    (home / "keys" / "broken.pub").write_text("garbage")
    result = ztml("verify")
    assert result.exit_code == 1 and "broken.pub" in _out(result)
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_verify_with_expect_head_detects_truncation(home: Path) -> None:
    _register(home)
    ztml("approve", _digest(home))
    head = json.loads(ztml("export").stdout)["records"][-1]
    with sqlite3.connect(home / "ledger.db") as conn:
        conn.execute("DELETE FROM ledger WHERE seq = 1")
    result = ztml("verify", "--expect-head", f"{head['seq']}:{head['hash']}")
    assert result.exit_code == 1 and "FAILED at seq 1" in _out(result)
