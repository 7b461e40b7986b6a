"""Fixtures for the ledger tests: in-memory signing keys, a trust store, ledgers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.keys.store import Signer, TrustStore
from service.ledger import Ledger, Record, open_ledger
from service.model.metrics import evaluation_document, robust_entry

EVALUATION: dict[str, Any] = evaluation_document(
    dataset="sklearn-digits/test",
    clean_accuracy=0.98,
    robust=[robust_entry(attack="worst-case", epsilon=0.1, steps=100, restarts=10, accuracy=0.85)],
)


def digest_of(n: int) -> str:
    """A deterministic fake artifact digest."""
    return f"sha256:{n:064x}"


@pytest.fixture(scope="session")
def trainer() -> Signer:
    return Signer("trainer@test", Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def approver() -> Signer:
    return Signer("approver@test", Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def auditor() -> Signer:
    return Signer("audit@test", Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def stranger() -> Signer:
    """A well-formed key that nobody trusts."""
    return Signer("mallory@evil", Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def trust(trainer: Signer, approver: Signer, auditor: Signer) -> TrustStore:
    return TrustStore.from_public_keys(
        [trainer.public_key, approver.public_key, auditor.public_key]
    )


class Clock:
    """A deterministic clock: one second per call."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZTML_LEDGER_URL", raising=False)
    with open_ledger(tmp_path / "ledger.db", clock=Clock()) as opened:
        yield opened


Register = Callable[..., Record]


def register_model(ledger: Ledger, signer: Signer, n: int, **overrides: Any) -> Record:
    """Register fake model ``n`` (digest ``digest_of(n)``)."""
    fields: dict[str, Any] = {
        "name": "digits-mlp",
        "version": str(n),
        "artifact": {"digest": digest_of(n), "format": "safetensors", "size": 1000 + n},
        "training_data_digest": "sha256:" + "d" * 64,
        "code_revision": "0123abc",
        "hyperparameters": {"lr": 0.001, "epochs": 30, "defense": "pgd", "epsilon": 0.1},
        "evaluation": EVALUATION,
    }
    fields.update(overrides)
    return ledger.register(signer=signer, **fields)


@pytest.fixture
def register(ledger: Ledger, trainer: Signer) -> Register:
    """Register fake model ``n`` in the test ledger, signed by the trainer."""

    def _register(n: int, **overrides: Any) -> Record:
        return register_model(ledger, trainer, n, **overrides)

    return _register


@pytest.fixture
def evaluation() -> dict[str, Any]:
    """A valid ``evaluation`` object of ``metrics.json``, fresh per test."""
    return {**EVALUATION, "robust": [dict(r) for r in EVALUATION["robust"]]}


@pytest.fixture(name="digest_of")
def digest_of_fixture() -> Callable[[int], str]:
    """The fake digest of model ``n``."""
    return digest_of


@pytest.fixture(name="register_model")
def register_model_fixture() -> Callable[..., Record]:
    """Register fake model ``n`` in any ledger: ``register_model(ledger, signer, n)``."""
    return register_model
