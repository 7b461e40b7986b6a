"""Fixtures for the deploy gate's tests: a signed model registered and approved in a ledger."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.gate import GateTrust
from service.keys.store import Signer, TrustStore
from service.ledger import hash_artifact, open_ledger
from service.model.metrics import evaluation_document, robust_entry
from service.oms import TrustedSigners, sign_model
from tests.service.oms.tampering import make_keys


@dataclass(frozen=True)
class Evidence:
    artifact: Path
    digest: str
    ledger_url: str
    export: Path
    trust: GateTrust
    trainer: Signer
    approver: Signer


#: What the gate requires: the worst case of PGD (100 steps, 10 restarts) and AutoAttack.
STRONG_EVALUATION = [
    robust_entry(attack="worst-case", epsilon=0.1, steps=100, restarts=10, accuracy=0.85)
]


def registered_model(home: Path, robust: list[dict[str, Any]]) -> Evidence:
    """An OMS-signed artifact registered with these robust results and approved."""
    oms = make_keys(home)
    model_dir = home / "model"
    model_dir.mkdir()
    artifact = model_dir / "model.safetensors"
    artifact.write_bytes(os.urandom(4096))
    (model_dir / "metrics.json").write_text(json.dumps({"model": {"version": "3"}}))
    bundle = sign_model(model_dir, key=oms.key)
    digest, size = hash_artifact(artifact)
    trainer = Signer("trainer@example", Ed25519PrivateKey.generate())
    approver = Signer("approver@example", Ed25519PrivateKey.generate())
    store = TrustStore.from_public_keys([trainer.public_key, approver.public_key])
    url = str(home / "ledger.db")
    with open_ledger(url) as ledger:
        ledger.register(
            signer=trainer,
            name="digits-mlp",
            version="3",
            artifact={"digest": digest, "format": "safetensors", "size": size},
            training_data_digest="sha256:" + "d" * 64,
            code_revision="abc1234",
            hyperparameters={},
            evaluation=evaluation_document(
                dataset="sklearn-digits/test", clean_accuracy=0.97, robust=robust
            ),
            oms_bundle=bundle.ledger_entry(),
        )
        ledger.approve(digest, signer=approver, comment="ok")
        export = home / "ledger-export.json"
        export.write_text(json.dumps(ledger.export(store)))
    signers = TrustedSigners.from_directory(oms.signers)
    trust = GateTrust(store, (trainer.key_id,), (approver.key_id,), signers)
    return Evidence(artifact, digest, url, export, trust, trainer, approver)


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    """An OMS-signed artifact registered (robust accuracy 0.85) and approved in a real ledger."""
    return registered_model(tmp_path_factory.mktemp("gate"), STRONG_EVALUATION)
