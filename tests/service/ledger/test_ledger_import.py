"""Importing signed records: whole verified chains only, stored unchanged, never diverging."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.keys.store import Signer, TrustStore
from service.ledger import Ledger, LedgerIntegrityError, open_ledger
from tests.service.ledger.conftest import Register, digest_of


def test_imported_records_are_stored_unchanged(
    ledger: Ledger, register: Register, approver: Signer, trust: TrustStore, tmp_path: Path
) -> None:
    register(1)
    ledger.approve(digest_of(1), signer=approver)
    records = list(ledger.records())
    with open_ledger(tmp_path / "copy.db") as copy:
        assert copy.import_records(records, trust) == 2
        assert [r.to_json() for r in copy.records()] == [r.to_json() for r in records]
        copy.verify(trust)


def test_ledger_already_longer_than_the_import_takes_nothing(
    ledger: Ledger, register: Register, trust: TrustStore
) -> None:
    register(1)
    prefix = list(ledger.records())
    register(2)
    assert ledger.import_records(prefix, trust) == 0
    assert ledger.count() == 2


def test_records_by_an_untrusted_signer_are_not_imported(
    ledger: Ledger, register: Register, stranger: Signer, tmp_path: Path
) -> None:
    register(1)
    records = list(ledger.records())
    with open_ledger(tmp_path / "copy.db") as copy:
        with pytest.raises(LedgerIntegrityError, match="unknown key"):
            copy.import_records(records, TrustStore.from_public_keys([stranger.public_key]))
        assert copy.count() == 0


def test_import_into_a_divergent_ledger_is_refused(
    ledger: Ledger, register: Register, trainer: Signer, trust: TrustStore, tmp_path: Path
) -> None:
    register(1)
    records = list(ledger.records())
    with open_ledger(tmp_path / "other.db") as other:
        other.register(
            signer=trainer,
            name="other",
            version="1",
            artifact={"digest": digest_of(9), "format": "safetensors", "size": 1},
            training_data_digest="sha256:" + "8" * 64,
            code_revision="x",
            hyperparameters={},
            evaluation={"clean_accuracy": 0.5, "robust": []},
        )
        with pytest.raises(LedgerIntegrityError, match="diverges"):
            other.import_records(records, trust)
        assert other.count() == 1
