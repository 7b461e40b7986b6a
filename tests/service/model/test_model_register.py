"""Registration, the first OMS check point: only a model signed by a trusted key is registered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.keys.store import init_keys
from service.ledger import open_ledger
from service.model.artifact import save_model
from service.model.errors import ModelSignatureError
from service.model.metrics import build_metrics, evaluation_document, robust_entry
from service.model.net import DigitsNet
from service.model.register import register_model
from service.oms import sign_model
from tests.service.oms.tampering import ATTACKS, REFUSALS, OmsKeys, attack, make_keys


@dataclass(frozen=True)
class Workspace:
    model_dir: Path
    oms: OmsKeys
    trainer_key: Path
    ledger: Path

    @property
    def artifact(self) -> Path:
        return self.model_dir / "model.safetensors"

    def register(self) -> object:
        return register_model(
            self.artifact,
            self.model_dir / "metrics.json",
            ledger_url=self.ledger,
            key_path=self.trainer_key,
            oms_signers=self.oms.signers,
        )


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A model directory (weights and metrics.json) signed by a trusted OMS key."""
    model_dir = tmp_path / "model"
    artifact = model_dir / "model.safetensors"
    digest = save_model(DigitsNet(), artifact, metadata={"version": "7", "defense": "pgd"})
    metrics = build_metrics(
        version="7",
        defense="pgd",
        artifact_digest=digest,
        artifact_size=artifact.stat().st_size,
        training_data_digest="sha256:" + "a" * 64,
        hyperparameters={"epochs": 1},
        evaluation=evaluation_document(
            dataset="sklearn-digits/test",
            clean_accuracy=0.97,
            robust=[
                robust_entry(
                    attack="worst-case", epsilon=0.1, steps=100, restarts=10, accuracy=0.85
                )
            ],
        ),
        training_seconds=1.0,
        revision="abc1234",
    )
    (model_dir / "metrics.json").write_text(json.dumps(metrics))
    oms = make_keys(tmp_path / "oms")
    sign_model(model_dir, key=oms.key)
    init_keys(tmp_path / "keys", ["trainer"])
    return Workspace(model_dir, oms, tmp_path / "keys" / "trainer.key", tmp_path / "ledger.db")


def test_a_signed_model_is_registered_with_its_bundle_digest(workspace: Workspace) -> None:
    import hashlib

    record = workspace.register()
    bundle = workspace.model_dir / "model.sig"
    with open_ledger(workspace.ledger, create=False) as ledger:
        (stored,) = list(ledger.records())
    assert stored == record
    assert stored.payload["oms_bundle"]["digest"] == (
        "sha256:" + hashlib.sha256(bundle.read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("name", ATTACKS)
def test_each_oms_attack_is_refused_before_anything_is_signed(
    name: str, workspace: Workspace, tmp_path: Path
) -> None:
    attack(name, workspace.model_dir, scratch=tmp_path)
    with pytest.raises(ModelSignatureError, match="registration refused") as refused:
        workspace.register()
    assert REFUSALS[name] in str(refused.value)
    assert not workspace.ledger.exists()


def test_an_unsigned_model_is_refused_with_the_fix(workspace: Workspace) -> None:
    (workspace.model_dir / "model.sig").unlink()
    with pytest.raises(ModelSignatureError, match="ztml model sign"):
        workspace.register()
    assert not workspace.ledger.exists()


def test_no_trusted_signer_refuses_registration(workspace: Workspace, tmp_path: Path) -> None:
    (tmp_path / "nobody").mkdir()
    with pytest.raises(ModelSignatureError, match="No trusted OMS signer keys"):
        register_model(
            workspace.artifact,
            workspace.model_dir / "metrics.json",
            ledger_url=workspace.ledger,
            key_path=workspace.trainer_key,
            oms_signers=tmp_path / "nobody",
        )
