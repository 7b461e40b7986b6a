"""Registering a model package: OMS over the whole directory, provenance from the package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.keys.store import init_keys
from service.ledger import open_ledger
from service.model.artifact import save_model
from service.model.cli import app
from service.model.contract import DIGITS_CONTRACT
from service.model.errors import (
    MetricsError,
    ModelSignatureError,
    PackageError,
    RegistrationError,
)
from service.model.metrics import build_metrics, evaluation_document, robust_entry
from service.model.net import DigitsNet
from service.model.package import open_model
from service.model.register import (
    package_code_digest,
    package_data_digest,
    register_model,
    register_package,
)
from service.oms import sign_model
from tests.service.model.packages import write_package
from tests.service.oms.tampering import OmsKeys, flip_byte, make_keys

runner = CliRunner()
SERVING: dict[str, Any] = {
    "tenant": "acme",
    "risk_tier": "medium",
    "max_batch": 32,
    "explanations": False,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_package(tmp_path_factory.mktemp("built") / "tiny")


@pytest.fixture
def oms(tmp_path: Path) -> OmsKeys:
    return make_keys(tmp_path / "oms")


@pytest.fixture
def trainer_key(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys", ["trainer"])
    return tmp_path / "keys" / "trainer.key"


@pytest.fixture
def package(built: Path, tmp_path: Path, oms: OmsKeys) -> Path:
    """A signed copy of the tiny package."""
    directory = Path(shutil.copytree(built, tmp_path / "tiny"))
    sign_model(directory, key=oms.key)
    return directory


def _evaluation(path: Path, *, digest: str | None, dataset: str = "tiny-tabular/test") -> Path:
    doc: dict[str, Any] = evaluation_document(
        dataset=dataset,
        clean_accuracy=0.97,
        robust=[
            robust_entry(attack="worst-case", epsilon=0.1, steps=100, restarts=10, accuracy=0.8)
        ],
    )
    if digest is not None:
        doc["model_digest"] = digest
    path.write_text(json.dumps(doc))
    return path


def _register(package: Path, evaluation: Path, tmp_path: Path, oms: OmsKeys, key: Path) -> Any:
    return register_package(
        package,
        evaluation_path=evaluation,
        serving=SERVING,
        ledger_url=tmp_path / "ledger.db",
        key_path=key,
        oms_signers=oms.signers,
    )


def test_a_signed_package_is_registered_with_its_contract(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    served = open_model(package)
    evaluation = _evaluation(tmp_path / "eval.json", digest=served.weights_digest)
    record = _register(package, evaluation, tmp_path, oms, trainer_key)
    payload = record.payload
    assert record.model_digest == served.weights_digest
    assert payload["name"] == "tiny-tabular" and payload["version"] == "1.0.0"
    assert payload["artifact"] == {
        "digest": served.weights_digest,
        "format": "safetensors",
        "size": served.weights_size,
    }
    assert payload["contract"] == {
        "digest": served.contract.digest(),
        "document": served.contract.document(),
    }
    assert payload["serving"] == SERVING
    assert payload["hyperparameters"] == {"hidden": 8}
    assert payload["training_data_digest"] == package_data_digest(package, served.contract)
    assert payload["code_revision"] == package_code_digest(package)
    assert "model_digest" not in payload["evaluation"]
    assert payload["evaluation"]["dataset"] == "tiny-tabular/test"
    with open_ledger(tmp_path / "ledger.db", create=False) as ledger:
        (stored,) = list(ledger.records())
    assert stored == record


def test_the_code_digest_changes_with_the_code(package: Path) -> None:
    before = package_code_digest(package)
    (package / "model.py").write_text((package / "model.py").read_text() + "\n# changed\n")
    assert package_code_digest(package) != before


def test_a_tampered_data_file_is_refused_before_signing(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    evaluation = _evaluation(tmp_path / "eval.json", digest=None)
    flip_byte(package / "data" / "test.safetensors")
    with pytest.raises(ModelSignatureError, match="registration refused"):
        _register(package, evaluation, tmp_path, oms, trainer_key)
    assert not (tmp_path / "ledger.db").exists()


def test_code_swapped_after_the_signature_check_is_not_registered(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.model.register as register

    served = open_model(package)
    evaluation = _evaluation(tmp_path / "eval.json", digest=served.weights_digest)
    verify = register._verify_bundle

    def verify_then_swap(*args: Any) -> Any:
        verified = verify(*args)
        # The window between checking the signature and reading the files.
        source = package / "model.py"
        source.write_text(source.read_text() + "\nraise SystemExit('unsigned code ran')\n")
        return verified

    monkeypatch.setattr(register, "_verify_bundle", verify_then_swap)
    with pytest.raises(PackageError, match=r"model\.py changed after its OMS signature"):
        _register(package, evaluation, tmp_path, oms, trainer_key)
    with open_ledger(tmp_path / "ledger.db") as ledger:
        assert list(ledger.records()) == []


def test_a_file_added_after_signing_is_refused(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    evaluation = _evaluation(tmp_path / "eval.json", digest=None)
    (package / "helpers.py").write_text("x = 1\n")
    with pytest.raises(ModelSignatureError, match="registration refused"):
        _register(package, evaluation, tmp_path, oms, trainer_key)


def test_an_evaluation_of_other_weights_is_refused(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    evaluation = _evaluation(tmp_path / "eval.json", digest="sha256:" + "0" * 64)
    with pytest.raises(MetricsError, match="computed for weights sha256:000"):
        _register(package, evaluation, tmp_path, oms, trainer_key)


def test_an_evaluation_of_another_dataset_is_refused(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    evaluation = _evaluation(tmp_path / "eval.json", digest=None, dataset="sklearn-digits/test")
    with pytest.raises(MetricsError, match="not this package's 'tiny-tabular/test'"):
        _register(package, evaluation, tmp_path, oms, trainer_key)


def test_a_malformed_evaluation_is_refused(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    bad = tmp_path / "eval.json"
    bad.write_text(json.dumps({"clean_accuracy": 2.0, "robust": []}))
    with pytest.raises(MetricsError, match=r"evaluation.clean_accuracy: must be within"):
        _register(package, bad, tmp_path, oms, trainer_key)


def test_bad_serving_settings_are_refused_before_anything_is_signed(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    evaluation = _evaluation(tmp_path / "eval.json", digest=None)
    with pytest.raises(RegistrationError, match=r"serving\.risk_tier"):
        register_package(
            package,
            evaluation_path=evaluation,
            serving={**SERVING, "risk_tier": "none"},
            ledger_url=tmp_path / "ledger.db",
            key_path=trainer_key,
            oms_signers=oms.signers,
        )
    assert not (tmp_path / "ledger.db").exists()


def test_register_model_hands_a_package_to_register_package(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    evaluation = _evaluation(tmp_path / "eval.json", digest=None)
    with pytest.raises(RegistrationError, match="serving"):
        register_model(package, evaluation, ledger_url=tmp_path / "l.db", oms_signers=oms.signers)
    record = register_model(
        package,
        evaluation,
        ledger_url=tmp_path / "ledger.db",
        key_path=trainer_key,
        oms_signers=oms.signers,
        serving=SERVING,
    )
    assert record.payload["name"] == "tiny-tabular"


def test_a_digits_registration_carries_the_digits_contract(
    tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    model_dir = tmp_path / "digits"
    artifact = model_dir / "model.safetensors"
    digest = save_model(DigitsNet((16,)), artifact, metadata={"version": "1", "defense": "none"})
    metrics = build_metrics(
        version="1",
        defense="none",
        artifact_digest=digest,
        artifact_size=artifact.stat().st_size,
        training_data_digest="sha256:" + "a" * 64,
        hyperparameters={},
        evaluation=evaluation_document(
            dataset="sklearn-digits/test", clean_accuracy=0.9, robust=[]
        ),
        training_seconds=1.0,
        revision="abc",
    )
    (model_dir / "metrics.json").write_text(json.dumps(metrics))
    sign_model(model_dir, key=oms.key)
    record = register_model(
        artifact,
        model_dir / "metrics.json",
        ledger_url=tmp_path / "ledger.db",
        key_path=trainer_key,
        oms_signers=oms.signers,
        serving=SERVING,
    )
    assert record.payload["contract"]["digest"] == DIGITS_CONTRACT.digest()
    assert record.payload["serving"] == SERVING


def test_the_cli_evaluates_and_registers_a_package(
    package: Path, tmp_path: Path, oms: OmsKeys, trainer_key: Path
) -> None:
    out = tmp_path / "evaluation.json"
    evaluated = runner.invoke(
        app, ["evaluate", str(package), "--out", str(out), "--profile", "tiny"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    doc = json.loads(out.read_text())
    assert doc["dataset"] == "tiny-tabular/test"
    assert doc["model_digest"] == open_model(package).weights_digest
    assert {r["steps"] for r in doc["robust"] if r["attack"] == "pgd"} == {10}
    ledger = tmp_path / "ledger.db"
    common = ["--ledger", str(ledger), "--key", str(trainer_key), "--oms-signers", str(oms.signers)]
    refused = runner.invoke(app, ["register", str(package), "--evaluation", str(out), *common])
    assert refused.exit_code == 1
    assert "--tenant" in refused.output
    registered = runner.invoke(
        app,
        [
            "register",
            str(package),
            "--evaluation",
            str(out),
            "--tenant",
            "acme",
            "--risk-tier",
            "low",
            "--max-batch",
            "16",
            "--no-explanations",
            *common,
        ],
    )
    assert registered.exit_code == 0, registered.output
    assert "tiny-tabular 1.0.0" in registered.output
    with open_ledger(ledger, create=False) as opened:
        (record,) = list(opened.records())
    assert record.payload["serving"] == {
        "tenant": "acme",
        "risk_tier": "low",
        "max_batch": 16,
        "explanations": False,
    }


def test_register_help_explains_packages() -> None:
    result = runner.invoke(app, ["register", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--evaluation", "--tenant", "--risk-tier", "--max-batch", "--explanations"):
        assert option in result.output
    assert "ztml-model.json" in result.output
