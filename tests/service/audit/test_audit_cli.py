import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.audit import AuditLog
from service.cli.main import app

runner = CliRunner()
WriteLog = Callable[..., AuditLog]


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_verify_accepts_an_intact_log_from_ztml_home(write_log: WriteLog):
    log = write_log(40, checkpoint_every=15)
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "intact: 40 events in 1 log(s), 3 signed checkpoint(s)" in _flat(result.output)
    assert log.log_id in result.output


def test_verify_names_the_first_bad_record_and_fails(write_log: WriteLog):
    log = write_log(10)
    path = log.log_dir / "segment-000001.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b'"predict"', b'"explain"')
    path.write_bytes(b"\n".join(lines))
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    out = _flat(result.output)
    assert "verification FAILED" in out
    assert f"file: {path}" in out
    assert "line: 7" in out
    assert "seq: 6" in out
    assert "hash does not match" in out
    assert "Traceback" not in result.output


def test_verify_detects_a_cut_tail_through_the_default_anchors_file(write_log: WriteLog):
    log = write_log(30, checkpoint_every=10)
    path = log.log_dir / "segment-000001.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in path.read_bytes().split(b"\n")[:20]))
    assert runner.invoke(app, ["audit", "verify", "--no-anchors"]).exit_code == 0
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert "were removed" in _flat(result.output)


def test_verify_needs_the_anchors_file_or_an_explicit_no_anchors(
    write_log: WriteLog, ztml_home: Path
):
    write_log(3)
    (ztml_home / "audit-anchors.jsonl").unlink()
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert "--no-anchors" in _flat(result.output)
    assert runner.invoke(app, ["audit", "verify", "--no-anchors"]).exit_code == 0


def test_verify_reports_a_missing_directory(tmp_path: Path):
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "does not exist" in _flat(result.output)
    assert "Traceback" not in result.output


def test_verify_reports_an_unreadable_trusted_key(write_log: WriteLog, tmp_path: Path):
    write_log(3)
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "audit.pub").write_text("not a key")
    result = runner.invoke(app, ["audit", "verify", "--trust", str(trust)])
    assert result.exit_code == 1
    assert "not a PEM Ed25519 key" in _flat(result.output)


def test_verify_fails_when_the_audit_key_is_not_trusted(write_log: WriteLog, tmp_path: Path):
    from service.keys.store import init_keys

    write_log(3)
    other = tmp_path / "other-keys"
    init_keys(other, ["someone"])
    result = runner.invoke(app, ["audit", "verify", "--trust", str(other)])
    assert result.exit_code == 1
    assert "not trusted" in _flat(result.output)


def test_verify_refuses_two_anchor_sources(write_log: WriteLog, tmp_path: Path):
    write_log(1)
    result = runner.invoke(
        app, ["audit", "verify", "--no-anchors", "--anchors", str(tmp_path / "a")]
    )
    assert result.exit_code == 1
    assert "at most one" in _flat(result.output)


def test_verify_against_a_ledger(audit_dir: Path, signer, make_event, tmp_path: Path):
    from service.audit import LedgerAnchorSink
    from service.ledger import open_ledger

    url = str(tmp_path / "ledger.db")
    ledger = open_ledger(url)
    with AuditLog(
        audit_dir, signer, anchor_sink=LedgerAnchorSink(ledger, signer), checkpoint_seconds=None
    ) as log:
        for _ in range(5):
            log.append(make_event())
    ledger.close()
    result = runner.invoke(app, ["audit", "verify", "--ledger", url])
    assert result.exit_code == 0, result.output
    segment = log.log_dir / "segment-000001.jsonl"
    segment.write_bytes(b"".join(x + b"\n" for x in segment.read_bytes().split(b"\n")[:3]))
    result = runner.invoke(app, ["audit", "verify", "--ledger", url])
    assert result.exit_code == 1
    assert "were removed" in _flat(result.output)


def test_tail_shows_the_newest_events(write_log: WriteLog):
    write_log(30)
    result = runner.invoke(app, ["audit", "tail", "-n", "5"])
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"req-\d+|#\d+", result.output)) >= 5
    seqs = [int(s) for s in re.findall(r"#(\d+)", result.output)]
    assert seqs == [25, 26, 27, 28, 29]


def test_tail_of_a_missing_directory_fails_clearly(tmp_path: Path):
    result = runner.invoke(app, ["audit", "tail", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "does not exist" in _flat(result.output)


def test_recover_says_what_it_removes_then_removes_it(
    write_log: WriteLog, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("service.audit.recover.writer_alive", lambda log_id: False)
    log = write_log(4, close=False)
    intact = log.segment_path.read_bytes()
    with log.segment_path.open("ab") as handle:
        handle.write(b'{"event":{"act')
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 1
    dry = runner.invoke(app, ["audit", "recover", "--dry-run"])
    assert dry.exit_code == 0
    assert "would remove incomplete last line 5" in _flat(dry.output)
    assert log.segment_path.read_bytes() != intact
    result = runner.invoke(app, ["audit", "recover"])
    assert result.exit_code == 0, result.output
    assert "removing incomplete last line 5" in _flat(result.output)
    assert log.segment_path.read_bytes() == intact
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    again = runner.invoke(app, ["audit", "recover"])
    assert "nothing to recover" in again.output


def test_recover_refuses_damage_a_crash_cannot_cause(write_log: WriteLog):
    log = write_log(100, segment_bytes=8 * 1024)
    first = log.log_dir / "segment-000001.jsonl"
    with first.open("ab") as handle:
        handle.write(b"junk")
    result = runner.invoke(app, ["audit", "recover"])
    assert result.exit_code == 1
    assert "not the last segment" in _flat(result.output)
    assert first.read_bytes().endswith(b"junk")


def test_mirrored_lines_are_json(write_log: WriteLog, capsys: pytest.CaptureFixture[str]):
    write_log(2, mirror_stdout=True)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [0, 1]


def test_verify_keeps_its_checkpoints_and_names_a_rolled_back_log(
    write_log: WriteLog, ztml_home: Path
):
    log = write_log(30, checkpoint_every=10)
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    assert (ztml_home / "seen-checkpoints.json").is_file()
    path = log.log_dir / "segment-000001.jsonl"
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"".join(line + b"\n" for line in lines[:22]))  # seq 0..19, 2 checkpoints
    anchors = ztml_home / "audit-anchors.jsonl"
    kept = anchors.read_bytes().split(b"\n")[:2]
    anchors.write_bytes(b"".join(line + b"\n" for line in kept))
    assert runner.invoke(app, ["audit", "verify", "--no-state"]).exit_code == 0
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    out = _flat(result.output)
    assert f"log: {log.log_id}" in out and "seq: 20" in out and "rolled back" in out
