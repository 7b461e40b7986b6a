"""The init container's ledger seeding: verified records only, never over a divergent ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.config import TrustKey
from infra.errors import LedgerExportError
from infra.ledger_seed import main, seed_ledger
from infra.secrets import trust_files


@pytest.fixture
def trust_dir(ledger: Any, tmp_path: Path) -> Path:
    directory = tmp_path / "trust"
    directory.mkdir()
    keys = [TrustKey(k["keyId"], k["publicKey"]) for k in ledger.trust_keys]
    files = trust_files(
        trainer_key_ids=[ledger.trainer_key_id],
        approver_key_ids=[ledger.approver_key_id],
        keys=keys,
    )
    for name, pem in files.items():
        (directory / name).write_text(pem)
    return directory


def _count(ledger_export: Path) -> int:
    data = json.loads(ledger_export.read_text())
    return len(data["records"] if isinstance(data, dict) else data)


def test_seeded_ledger_verifies_with_the_same_records(
    ledger: Any, trust_dir: Path, tmp_path: Path
) -> None:
    from service.keys.store import TrustStore
    from service.ledger import open_ledger

    url = str(tmp_path / "home" / "ledger.db")
    (tmp_path / "home").mkdir()
    appended = seed_ledger(export_path=ledger.export_path, ledger_url=url, trust_dir=trust_dir)
    assert appended == _count(ledger.export_path)
    with open_ledger(url, create=False) as book:
        export = book.export(TrustStore.from_directory(trust_dir))
    assert export["verified"] is True
    original = json.loads(ledger.export_path.read_text())
    assert export["records"] == (original["records"] if isinstance(original, dict) else original)


def test_seeding_twice_appends_nothing(ledger: Any, trust_dir: Path, tmp_path: Path) -> None:
    url = str(tmp_path / "ledger.db")
    seed_ledger(export_path=ledger.export_path, ledger_url=url, trust_dir=trust_dir)
    assert seed_ledger(export_path=ledger.export_path, ledger_url=url, trust_dir=trust_dir) == 0


def test_tampered_export_is_not_seeded(ledger: Any, trust_dir: Path, tmp_path: Path) -> None:
    data = json.loads(ledger.export_path.read_text())
    records = data["records"] if isinstance(data, dict) else data
    records[0]["payload"]["version"] = "forged"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    url = tmp_path / "ledger.db"
    with pytest.raises(LedgerExportError, match="does not verify"):
        seed_ledger(export_path=forged, ledger_url=str(url), trust_dir=trust_dir)
    assert not url.exists()


def test_divergent_ledger_is_not_overwritten(ledger: Any, trust_dir: Path, tmp_path: Path) -> None:
    from service.keys.store import Signer
    from service.ledger import open_ledger

    url = str(tmp_path / "ledger.db")
    with open_ledger(url) as book:
        book.register(
            signer=Signer("intruder@example", Ed25519PrivateKey.generate()),
            name="other",
            version="1",
            artifact={"digest": "sha256:" + "7" * 64, "format": "safetensors", "size": 1},
            training_data_digest="sha256:" + "8" * 64,
            code_revision="x",
            hyperparameters={},
            evaluation={"clean_accuracy": 0.5, "robust": []},
        )
    with pytest.raises(LedgerExportError, match="diverges"):
        seed_ledger(export_path=ledger.export_path, ledger_url=url, trust_dir=trust_dir)


def test_seed_without_trusted_keys_is_refused(ledger: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LedgerExportError, match="No trusted"):
        seed_ledger(
            export_path=ledger.export_path, ledger_url=str(tmp_path / "l.db"), trust_dir=empty
        )


def test_command_line_reports_failure_with_exit_code(
    ledger: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(
        [
            "--export",
            str(ledger.export_path),
            "--ledger",
            str(tmp_path / "l.db"),
            "--trust-dir",
            str(empty),
        ]
    )
    assert code == 1
    assert "ledger seed failed" in capsys.readouterr().err
