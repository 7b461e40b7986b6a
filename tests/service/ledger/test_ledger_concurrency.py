"""Concurrent appends from several real processes form one linear chain."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.keys.store import Signer, TrustStore
from service.ledger import DuplicateRegistrationError, open_ledger
from service.toolchain.postgres import fresh_database

WORKERS = 4
APPENDS = 50
SHARED = "sha256:" + "5" * 64


def _register(ledger: Any, signer: Signer, digest: str, version: str) -> int:
    record = ledger.register(
        signer=signer,
        name="digits-mlp",
        version=version,
        artifact={"digest": digest, "format": "safetensors", "size": 1},
        training_data_digest="sha256:" + "d" * 64,
        code_revision="abc",
        hyperparameters={"worker": version},
        evaluation={"clean_accuracy": 0.9, "robust": []},
    )
    return int(record.seq)


def append_worker(url: str, key: bytes, worker: int) -> tuple[list[int], int]:
    """Append APPENDS registrations, and race once for the shared digest."""
    signer = Signer(f"trainer-{worker}@test", Ed25519PrivateKey.from_private_bytes(key))
    seqs, shared_wins = [], 0
    with open_ledger(url) as ledger:
        for i in range(APPENDS):
            seqs.append(_register(ledger, signer, f"sha256:{worker:032x}{i:032x}", f"{worker}.{i}"))
            if i == APPENDS // 2:
                try:
                    seqs.append(_register(ledger, signer, SHARED, f"shared-{worker}"))
                    shared_wins += 1
                except DuplicateRegistrationError:
                    pass
    return seqs, shared_wins


def _run(url: str) -> None:
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    open_ledger(url).close()  # create the schema once, before the race
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        results = pool.starmap(append_worker, [(url, raw, w) for w in range(WORKERS)])
    seqs = sorted(s for worker_seqs, _ in results for s in worker_seqs)
    wins = sum(w for _, w in results)
    total = WORKERS * APPENDS + 1
    assert wins == 1, "exactly one process may register the shared digest"
    assert seqs == list(range(total)), "every returned seq is distinct, none lost, no gap"
    with open_ledger(url, create=False) as ledger:
        report = ledger.verify(TrustStore.from_public_keys([private.public_key()]))
        assert report.count == total == ledger.count()


@pytest.mark.slow
def test_concurrent_sqlite_appends_form_one_chain(tmp_path: Path) -> None:
    _run(str(tmp_path / "ledger.db"))


@pytest.mark.slow
@pytest.mark.system
@pytest.mark.postgres
def test_concurrent_postgres_appends_form_one_chain(postgres_url: str) -> None:
    _run(fresh_database(postgres_url, "concurrency"))
