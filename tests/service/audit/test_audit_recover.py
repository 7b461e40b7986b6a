import os
from collections.abc import Callable
from pathlib import Path

import pytest

from service.audit import (
    AuditLog,
    AuditRecoverError,
    AuditVerificationError,
    FileAnchorSink,
    verify_audit_dir,
)
from service.audit.recover import find_incomplete, remove_incomplete, writer_alive
from service.audit.segments import host_tag
from service.keys.store import Signer, TrustStore

WriteLog = Callable[..., AuditLog]
PARTIAL = b'{"event":{"action":"predict","cli'


def _crash(log: AuditLog) -> Path:
    """Leave the log as a writer killed mid-write would (and pretend the writer is gone)."""
    with log.segment_path.open("ab") as handle:
        handle.write(PARTIAL)
    return log.segment_path


@pytest.fixture(autouse=True)
def _writers_are_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.audit.recover.writer_alive", lambda log_id: False)


def test_recover_removes_only_the_incomplete_last_line(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(12, close=False, checkpoint_every=5)
    intact = log.segment_path.read_bytes()
    path = _crash(log)
    (item,) = find_incomplete(audit_dir)
    assert (item.path, item.line, item.data) == (path, 15, PARTIAL)  # 12 events + 2 checkpoints
    remove_incomplete([item])
    assert path.read_bytes() == intact
    report = verify_audit_dir(audit_dir, trust, anchors=anchors)
    assert report.logs[0].last_seq == 11
    assert report.logs[0].signed_seq == 9


def test_verify_keeps_failing_until_recover_runs(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    _crash(write_log(3, close=False))
    for _ in range(2):
        with pytest.raises(AuditVerificationError, match="incomplete last line"):
            verify_audit_dir(audit_dir, trust, anchors=anchors)


def test_an_incomplete_line_in_an_earlier_segment_is_refused_and_left_alone(
    write_log: WriteLog, audit_dir: Path
):
    log = write_log(100, segment_bytes=8 * 1024)
    first = log.log_dir / "segment-000001.jsonl"
    with first.open("ab") as handle:
        handle.write(PARTIAL)
    before = first.read_bytes()
    with pytest.raises(AuditRecoverError, match="not the last segment"):
        find_incomplete(audit_dir)
    assert first.read_bytes() == before


def test_an_overlong_partial_line_is_refused(write_log: WriteLog, audit_dir: Path):
    log = write_log(2, close=False)
    with log.segment_path.open("ab") as handle:
        handle.write(b"x" * (2 << 20))
    with pytest.raises(AuditRecoverError, match="too long"):
        find_incomplete(audit_dir)


def test_a_partial_anchor_line_is_recovered_too(
    write_log: WriteLog,
    audit_dir: Path,
    trust: TrustStore,
    anchors: FileAnchorSink,
    make_event: Callable[..., dict],
    signer: Signer,
):
    write_log(3)
    with anchors.path.open("ab") as handle:
        handle.write(b'{"checkpoint":{"head":"ab')
    with pytest.raises(AuditVerificationError, match="incomplete last line"):
        verify_audit_dir(audit_dir, trust, anchors=anchors)
    with AuditLog(audit_dir, signer, checkpoint_seconds=None) as blocked:  # refuses to append
        blocked.append(make_event())
    assert blocked.anchor_failures == 1
    items = find_incomplete(audit_dir, anchors_path=anchors.path)
    assert [item.path for item in items] == [anchors.path]
    remove_incomplete(items)
    verify_audit_dir(audit_dir, trust, anchors=anchors)


def test_a_new_log_after_a_crash_starts_a_new_chain_and_leaves_the_damaged_file(
    write_log: WriteLog, audit_dir: Path, signer: Signer, make_event: Callable[..., dict]
):
    crashed = write_log(5, close=False)
    damaged = _crash(crashed)
    before = damaged.read_bytes()
    with AuditLog(audit_dir, signer, checkpoint_seconds=None) as fresh:
        assert fresh.append(make_event()) == 0
    assert fresh.log_id != crashed.log_id
    assert damaged.read_bytes() == before


def test_a_file_changed_since_inspection_is_not_truncated(write_log: WriteLog, audit_dir: Path):
    path = _crash(write_log(3, close=False))
    items = find_incomplete(audit_dir)
    with path.open("ab") as handle:
        handle.write(b"more")
    with pytest.raises(AuditRecoverError, match="changed"):
        remove_incomplete(items)
    assert path.read_bytes().endswith(PARTIAL + b"more")


def test_the_log_of_a_running_writer_is_recognised():
    assert writer_alive(f"{host_tag()}-{os.getpid()}-1")
    assert not writer_alive(f"other-host-{os.getpid()}-1")
    assert not writer_alive("not-a-log-id")


def test_the_log_of_a_live_writer_is_not_recovered(
    write_log: WriteLog, audit_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    path = _crash(write_log(3, close=False))
    before = path.read_bytes()
    monkeypatch.setattr("service.audit.recover.writer_alive", lambda log_id: True)
    with pytest.raises(AuditRecoverError, match="still running"):
        remove_incomplete(find_incomplete(audit_dir))
    assert path.read_bytes() == before
