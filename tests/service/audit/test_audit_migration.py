"""Audit logs written by the previous version verify, upgrade with one command, lose nothing.

``testdata/previous/`` holds two logs written by the version before Merkle checkpoints
(JSON checkpoints; see ``tests/service/ledger/testdata/make_previous_format.py``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.audit import FileAnchorSink, verify_audit_dir
from service.cli.main import app
from service.keys.store import TrustStore, init_keys

PREVIOUS = Path(__file__).parent / "testdata" / "previous"
TLOG_VERIFY = Path(__file__).resolve().parents[3] / "scripts" / "tlog-verify"
runner = CliRunner()


@pytest.fixture
def copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """(audit dir, anchors file, trust dir with the old audit.pub and a new audit key)."""
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "home"))
    audit = tmp_path / "audit"
    shutil.copytree(PREVIOUS / "audit", audit)
    anchors = tmp_path / "audit-anchors.jsonl"
    shutil.copyfile(PREVIOUS / "audit-anchors.jsonl", anchors)
    keys = tmp_path / "keys"
    init_keys(keys, ["audit"])
    shutil.copyfile(PREVIOUS / "trust" / "audit.pub", keys / "audit-previous.pub")
    return audit, anchors, keys


def _contents(audit: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(audit.glob("*/segment-*.jsonl"))}


def test_previous_logs_verify_without_tree_checkpoints(copied: tuple[Path, Path, Path]) -> None:
    audit, anchors, keys = copied
    report = verify_audit_dir(
        audit, TrustStore.from_directory(keys), anchors=FileAnchorSink(anchors)
    )
    assert len(report.logs) == 2 and report.events == 60
    assert all(log.tree_signed_seq == -1 for log in report.logs)


def test_upgrade_appends_a_tree_checkpoint_and_keeps_every_byte(
    copied: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    audit, anchors, keys = copied
    before = _contents(audit)
    args = [str(audit), "--trust", str(keys), "--anchors", str(anchors)]
    result = runner.invoke(app, ["audit", "upgrade", *args, "--key", str(keys / "audit.key")])
    assert result.exit_code == 0, result.output
    after = _contents(audit)
    assert all(after[log].startswith(before[log]) for log in before)  # nothing lost
    report = verify_audit_dir(
        audit, TrustStore.from_directory(keys), anchors=FileAnchorSink(anchors)
    )
    assert all(log.tree_signed_seq == log.last_seq == 29 for log in report.logs)
    verified = runner.invoke(app, ["audit", "verify", *args])
    assert "intact up to the newest signed checkpoint (seq 29)" in " ".join(verified.output.split())
    log_id = sorted(before)[0]
    proof = tmp_path / "proof.json"
    made = runner.invoke(
        app,
        ["audit", "prove", "inclusion", "12", "--log", log_id, str(audit), "--out", str(proof)],
    )
    assert made.exit_code == 0, made.output
    vkeys = runner.invoke(app, ["audit", "vkey", "--log", log_id, "--trust", str(keys)]).output
    checked = subprocess.run(
        [
            sys.executable,
            str(TLOG_VERIFY),
            *[a for v in vkeys.split() for a in ("--vkey", v)],
            str(proof),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = runner.invoke(app, ["audit", "upgrade", *args, "--key", str(keys / "audit.key")])
    assert again.exit_code == 0 and "0 log(s) checkpointed" in again.output
