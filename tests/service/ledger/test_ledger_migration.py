"""A ledger written by the previous version verifies, upgrades with one command, loses nothing.

``testdata/previous/ledger.db`` was written by the version before Merkle checkpoints
(see ``testdata/make_previous_format.py``); its audit anchors are JSON checkpoints.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.main import app
from service.keys.store import Signer, TrustStore, init_keys
from service.ledger import LedgerIntegrityError, open_ledger
from service.ledger.checkpoints import require_coverage

PREVIOUS = Path(__file__).parent / "testdata" / "previous"
TLOG_VERIFY = Path(__file__).resolve().parents[3] / "scripts" / "tlog-verify"
runner = CliRunner()


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZTML_LEDGER_URL", raising=False)
    db = tmp_path / "ledger.db"
    with sqlite3.connect(PREVIOUS / "ledger.db") as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    return db


@pytest.fixture
def trust_dir(tmp_path: Path) -> Path:
    """The previous keys' public halves, and a new approver key (with its private half)."""
    keys = tmp_path / "keys"
    init_keys(keys, ["approver-2"])
    for pub in (PREVIOUS / "trust").glob("*.pub"):
        shutil.copyfile(pub, keys / pub.name)
    return keys


def _texts(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT record FROM ledger ORDER BY seq").fetchall()
    conn.close()
    return [r[0] for r in rows]


def test_the_previous_ledger_verifies_but_is_unproven(copy: Path, trust_dir: Path) -> None:
    trust = TrustStore.from_directory(trust_dir)
    with open_ledger(copy, create=False) as ledger:
        report = ledger.verify(trust)
    assert report.count > 30 and report.anchors > 0
    assert report.tree.checkpoint is None and report.unproven == report.count
    with pytest.raises(LedgerIntegrityError, match="unproven"):
        require_coverage(report.tree, [0], "the registration")


def test_upgrade_keeps_every_record_and_proves_them_all(
    copy: Path, trust_dir: Path, tmp_path: Path
) -> None:
    before = _texts(copy)
    args = ["--ledger", str(copy), "--trust", str(trust_dir)]
    result = runner.invoke(
        app, ["ledger", "upgrade", *args, "--key", str(trust_dir / "approver-2.key")]
    )
    assert result.exit_code == 0, result.output
    assert "ledger upgraded" in result.output
    assert f"up to the newest signed checkpoint (seq {len(before) - 1})" in " ".join(
        result.output.split()
    )
    assert _texts(copy) == before  # nothing rewritten, nothing lost
    verified = runner.invoke(app, ["ledger", "verify", *args])
    assert verified.exit_code == 0 and "unproven" not in verified.output, verified.output
    proof = tmp_path / "proof.json"
    assert (
        runner.invoke(
            app, ["ledger", "prove", "inclusion", "7", "--ledger", str(copy), "--out", str(proof)]
        ).exit_code
        == 0
    )
    vkeys = runner.invoke(app, ["ledger", "vkey", *args]).output.split()
    checked = subprocess.run(
        [sys.executable, str(TLOG_VERIFY), *[a for v in vkeys for a in ("--vkey", v)], str(proof)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_upgraded_ledger_takes_new_records_with_checkpoints(copy: Path, trust_dir: Path) -> None:
    trust = TrustStore.from_directory(trust_dir)
    approver = Signer.from_file(trust_dir / "approver-2.key", "approver@new-host")
    with open_ledger(copy, create=False) as ledger:
        ledger.upgrade(approver, trust)
        digest = next(m.digest for m in ledger.models() if m.status == "registered")
        ledger.approve(digest, signer=approver, comment="after the upgrade")
        report = ledger.verify(trust)
        export = ledger.export(trust)
    assert report.unproven == 0 and report.tree.checkpoint is not None
    assert report.tree.checkpoint.size == report.count
    assert json.loads(json.dumps(export))["checkpoint"] == report.tree.checkpoint.text
