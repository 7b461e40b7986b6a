import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.audit import (
    AuditDirError,
    AuditEventError,
    AuditLog,
    AuditTrustError,
    AuditVerificationError,
    FileAnchorSink,
    LedgerAnchorSink,
    fast_encode,
    verify_audit_dir,
)
from service.audit.times import TimeFloor
from service.chain.core import Checkpoint
from service.chain.errors import ChainVerificationError
from service.chain.seen import SeenCheckpoints
from service.chain.tlog import LogCheckpoint, TreeCheckpoint, audit_origin, checkpoint_from_dict
from service.keys.store import Signer, TrustStore
from tests.service.audit.conftest import resigned

WriteLog = Callable[..., AuditLog]


def _segment(log: AuditLog, number: int = 1) -> Path:
    return log.log_dir / f"segment-{number:06d}.jsonl"


def _rewrite(path: Path, edit: Callable[[list[bytes]], list[bytes]]) -> None:
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"".join(line + b"\n" for line in edit(lines)))


def _line_of(path: Path, kind: str, index: int = 0) -> int:
    """0-based index of the index-th line holding ``kind`` (event or checkpoint)."""
    lines = path.read_bytes().split(b"\n")[:-1]
    found = [i for i, line in enumerate(lines) if line.startswith(b'{"' + kind.encode())]
    return found[index]


def test_an_intact_log_verifies_with_a_report(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(120, checkpoint_every=25, segment_bytes=16 * 1024)
    report = verify_audit_dir(audit_dir, trust, anchors=anchors)
    (summary,) = report.logs
    assert summary.log_id == log.log_id
    assert (summary.events, summary.last_seq, summary.signed_seq, summary.anchored_seq) == (
        120,
        119,
        119,
        119,
    )
    assert summary.segments > 1
    assert summary.head == log.head
    assert report.warnings == []


def test_verifying_without_anchors_warns_that_a_cut_tail_is_undetectable(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore
):
    write_log(5)
    assert any("without anchors" in w for w in verify_audit_dir(audit_dir, trust).warnings)


def test_events_after_the_last_checkpoint_are_accepted_with_a_warning(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    write_log(15, close=False, checkpoint_every=10)  # a writer that died without closing
    report = verify_audit_dir(audit_dir, trust, anchors=anchors)
    assert report.logs[0].unsigned_events == 5
    assert any("not covered by a signature" in w for w in report.warnings)
    with pytest.raises(AuditVerificationError, match="not covered"):
        verify_audit_dir(audit_dir, trust, anchors=anchors, strict=True)


def test_an_altered_record_is_named_by_file_line_and_seq(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(30, checkpoint_every=10)
    path = _segment(log)
    index = _line_of(path, "event", 14)

    def edit(lines: list[bytes]) -> list[bytes]:
        lines[index] = lines[index].replace(b'"alice"', b'"mallory"')
        return lines

    _rewrite(path, edit)
    with pytest.raises(AuditVerificationError) as info:
        verify_audit_dir(audit_dir, trust, anchors=anchors)
    assert (info.value.file, info.value.line, info.value.seq) == (path, index + 1, 14)
    assert "hash does not match" in info.value.reason
    assert isinstance(info.value, ChainVerificationError)


def test_an_unparsable_line_is_reported_as_a_parse_error(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(10)
    path = _segment(log)
    _rewrite(path, lambda lines: [*lines[:3], lines[3][:40], *lines[4:]])
    with pytest.raises(AuditVerificationError, match="not valid JSON") as info:
        verify_audit_dir(audit_dir, trust, anchors=anchors)
    assert info.value.line == 4


def test_a_deleted_record_is_detected(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(10)
    _rewrite(_segment(log), lambda lines: lines[:4] + lines[5:])
    with pytest.raises(AuditVerificationError, match="sequence number 5 where 4"):
        verify_audit_dir(audit_dir, trust, anchors=anchors)


def test_cutting_off_the_newest_events_is_detected_by_the_anchor(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(30, checkpoint_every=10)
    path = _segment(log)
    cut = _line_of(path, "checkpoint", 2)  # the final checkpoint, after seq 29
    _rewrite(path, lambda lines: lines[: cut - 3])
    verify_audit_dir(audit_dir, trust)  # the chain alone cannot tell
    with pytest.raises(AuditVerificationError, match="newest events or segments were removed"):
        verify_audit_dir(audit_dir, trust, anchors=anchors)


def test_a_deleted_last_segment_is_detected_by_the_anchor(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(200, segment_bytes=8 * 1024)
    segments = sorted(log.log_dir.glob("segment-*.jsonl"))
    segments[-1].unlink()
    with pytest.raises(AuditVerificationError, match="were removed"):
        verify_audit_dir(audit_dir, trust, anchors=anchors)


def test_a_deleted_middle_segment_is_detected(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore
):
    log = write_log(200, segment_bytes=8 * 1024)
    _segment(log, 2).unlink()
    with pytest.raises(AuditVerificationError, match=r"segment-000002\.jsonl is missing"):
        verify_audit_dir(audit_dir, trust)


def test_a_deleted_log_is_detected_by_the_anchors(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    write_log(5)
    gone = write_log(5)
    shutil.rmtree(gone.log_dir)
    with pytest.raises(AuditVerificationError, match="whole log was deleted") as info:
        verify_audit_dir(audit_dir, trust, anchors=anchors)
    assert info.value.log == gone.log_id


def test_a_removed_checkpoint_line_is_detected_with_anchors(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(30, checkpoint_every=10)
    path = _segment(log)
    index = _line_of(path, "checkpoint", 0)
    _rewrite(path, lambda lines: lines[:index] + lines[index + 1 :])
    with pytest.raises(AuditVerificationError, match="missing from the segments"):
        verify_audit_dir(audit_dir, trust, anchors=anchors)


def test_a_checkpoint_signed_by_an_unknown_key_is_detected(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore
):
    log = write_log(30, checkpoint_every=10)
    path = _segment(log)
    index = _line_of(path, "checkpoint", 1)
    intruder = Signer("intruder", Ed25519PrivateKey.generate())

    def edit(lines: list[bytes]) -> list[bytes]:
        old = LogCheckpoint.from_dict(json.loads(lines[index])["checkpoint"])
        forged = resigned(old, intruder)
        lines[index] = fast_encode({"checkpoint": forged.to_dict()})
        return lines

    _rewrite(path, edit)
    with pytest.raises(AuditVerificationError, match="not trusted") as info:
        verify_audit_dir(audit_dir, trust)
    assert info.value.line == index + 1


def test_an_anchor_signed_by_an_unknown_key_is_detected(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(3)
    intruder = Signer("intruder", Ed25519PrivateKey.generate())
    anchors.anchor(
        Checkpoint.create(
            log=log.log_id, seq=2, head=log.head, time="2026-11-22T10:00:00Z", signer=intruder
        )
    )
    with pytest.raises(AuditVerificationError, match=r"anchored checkpoint key .* not trusted"):
        verify_audit_dir(audit_dir, trust, anchors=anchors)


def test_a_checkpoint_copied_from_another_log_is_detected(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore
):
    first = write_log(10)
    second = write_log(10)
    foreign = _segment(first).read_bytes().split(b"\n")[-2]
    _rewrite(_segment(second), lambda lines: [*lines[:-1], foreign])
    with pytest.raises(AuditVerificationError, match="names log"):
        verify_audit_dir(audit_dir, trust)


def test_an_incomplete_last_line_fails_and_is_not_repaired(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    log = write_log(10, close=False, checkpoint_every=100)
    path = _segment(log)
    with path.open("ab") as handle:
        handle.write(b'{"event":{"action":"pre')
    before = path.read_bytes()
    with pytest.raises(AuditVerificationError, match="incomplete last line") as info:
        verify_audit_dir(audit_dir, trust, anchors=anchors)
    assert (info.value.line, info.value.seq) == (11, 10)
    assert path.read_bytes() == before


def test_an_empty_trust_store_is_refused(write_log: WriteLog, audit_dir: Path):
    write_log(2)
    with pytest.raises(AuditTrustError, match="--trust"):
        verify_audit_dir(audit_dir, TrustStore())


def test_a_missing_directory_is_a_clear_error(tmp_path: Path, trust: TrustStore):
    with pytest.raises(AuditDirError, match="does not exist"):
        verify_audit_dir(tmp_path / "nope", trust)


def test_a_corrupt_anchors_file_is_reported_with_its_line(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    write_log(3)
    with anchors.path.open("ab") as handle:
        handle.write(b"garbage\n")
    with pytest.raises(AuditVerificationError, match="anchor line is not valid JSON") as info:
        verify_audit_dir(audit_dir, trust, anchors=anchors)
    assert (info.value.file, info.value.line) == (anchors.path, 2)


def test_checkpoints_anchored_in_the_ledger_reveal_a_cut_tail(
    audit_dir: Path, signer: Signer, trust: TrustStore, tmp_path: Path, make_event: Any
):
    from service.ledger import open_ledger

    ledger = open_ledger(tmp_path / "ledger.db")
    try:
        sink = LedgerAnchorSink(ledger, signer)
        with AuditLog(audit_dir, signer, anchor_sink=sink, checkpoint_every=10) as log:
            for _ in range(25):
                log.append(make_event())
        assert [cp.seq for cp in sink.anchors(log.log_id)] == [9, 19, 24]
        assert verify_audit_dir(audit_dir, trust, anchors=sink).logs[0].anchored_seq == 24
        _rewrite(_segment(log), lambda lines: lines[:12])
        with pytest.raises(AuditVerificationError, match="were removed"):
            verify_audit_dir(audit_dir, trust, anchors=sink)
        shutil.rmtree(log.log_dir)
        with pytest.raises(AuditVerificationError, match="whole log was deleted"):
            verify_audit_dir(audit_dir, trust, anchors=sink)
    finally:
        ledger.close()


def test_an_event_beyond_the_clock_skew_before_the_newest_is_refused(
    audit_dir: Path, signer: Signer, make_event: Any
) -> None:
    with AuditLog(audit_dir, signer) as log:
        log.append(make_event(time="2026-11-22T10:10:00.000Z"))
        log.append(make_event(time="2026-11-22T10:05:00.000Z"))  # 300 s back: allowed
        with pytest.raises(AuditEventError, match="clock skew"):
            log.append(make_event(time="2026-11-22T10:04:59.000Z"))


def test_a_time_regression_written_by_another_writer_is_named(
    audit_dir: Path, signer: Signer, trust: TrustStore, make_event: Any
) -> None:
    with AuditLog(audit_dir, signer) as log:
        log._times = TimeFloor(skew_s=10**9)  # a writer that does not check
        for minute in (10, 11, 3, 12):
            log.append(make_event(time=f"2026-11-22T10:{minute:02d}:00.000Z"))
    with pytest.raises(AuditVerificationError, match="clock skew") as info:
        verify_audit_dir(audit_dir, trust)
    assert info.value.seq == 2


def test_a_tree_checkpoint_with_another_root_is_detected(
    write_log: WriteLog, audit_dir: Path, trust: TrustStore, signer: Signer
) -> None:
    log = write_log(12, checkpoint_every=5)
    path = _segment(log)
    index = _line_of(path, "checkpoint", 1)

    def edit(lines: list[bytes]) -> list[bytes]:
        old = LogCheckpoint.from_dict(json.loads(lines[index])["checkpoint"])
        tree = old.checkpoint
        forged = TreeCheckpoint.create(
            origin=tree.origin, size=tree.size, root=b"\x07" * 32, signer=signer
        )
        lines[index] = fast_encode({"checkpoint": LogCheckpoint(old.log, forged).to_dict()})
        return lines

    _rewrite(path, edit)
    with pytest.raises(AuditVerificationError, match="root does not match") as info:
        verify_audit_dir(audit_dir, trust)
    assert info.value.line == index + 1


def _keep_anchors(anchors: FileAnchorSink, last_seq: int) -> None:
    """Drop the anchors of checkpoints after ``last_seq`` (as an attacker would)."""
    _rewrite(
        anchors.path,
        lambda lines: [
            line
            for line in lines
            if checkpoint_from_dict(json.loads(line)["checkpoint"]).seq <= last_seq
        ],
    )


def test_a_cut_tail_with_its_checkpoints_and_anchors_removed_is_named(
    write_log: WriteLog,
    audit_dir: Path,
    trust: TrustStore,
    anchors: FileAnchorSink,
    tmp_path: Path,
):
    seen = SeenCheckpoints(tmp_path / "seen.json")
    log = write_log(30, checkpoint_every=10)
    verify_audit_dir(audit_dir, trust, anchors=anchors, seen=seen)
    path = _segment(log)
    cut = _line_of(path, "checkpoint", 1)  # the checkpoint after seq 19 stays, the rest goes
    _rewrite(path, lambda lines: lines[: cut + 1])
    _keep_anchors(anchors, 19)
    verify_audit_dir(audit_dir, trust, anchors=anchors)  # consistent on its own
    with pytest.raises(AuditVerificationError, match=r"events seq 20\.\.29 were truncated") as info:
        verify_audit_dir(audit_dir, trust, anchors=anchors, seen=seen)
    assert (info.value.log, info.value.seq) == (log.log_id, 20)


def test_a_rollback_to_an_older_consistent_state_is_detected(
    write_log: WriteLog,
    audit_dir: Path,
    trust: TrustStore,
    anchors: FileAnchorSink,
    tmp_path: Path,
    make_event: Any,
):
    seen = SeenCheckpoints(tmp_path / "seen.json")
    log = write_log(20, close=False, checkpoint_every=10)
    old_dir, old_anchors = tmp_path / "old-audit", tmp_path / "old-anchors.jsonl"
    shutil.copytree(audit_dir, old_dir)
    shutil.copyfile(anchors.path, old_anchors)
    for _ in range(7):
        log.append(make_event())
    log.close()
    verify_audit_dir(audit_dir, trust, anchors=anchors, seen=seen)
    shutil.rmtree(audit_dir)
    shutil.copytree(old_dir, audit_dir)
    shutil.copyfile(old_anchors, anchors.path)
    verify_audit_dir(audit_dir, trust, anchors=FileAnchorSink(anchors.path))
    with pytest.raises(AuditVerificationError, match="rolled back") as info:
        verify_audit_dir(audit_dir, trust, anchors=FileAnchorSink(anchors.path), seen=seen)
    assert (info.value.log, info.value.seq) == (log.log_id, 20)


def test_a_normal_append_between_runs_passes_and_moves_the_kept_checkpoint(
    write_log: WriteLog,
    audit_dir: Path,
    trust: TrustStore,
    anchors: FileAnchorSink,
    tmp_path: Path,
    make_event: Any,
):
    seen = SeenCheckpoints(tmp_path / "seen.json")
    log = write_log(10, close=False, checkpoint_every=5)
    verify_audit_dir(audit_dir, trust, anchors=anchors, seen=seen)
    origin = audit_origin(log.log_id)
    assert (kept := seen.get(origin)) is not None and kept.size == 10
    for _ in range(12):
        log.append(make_event())
    log.close()
    verify_audit_dir(audit_dir, trust, anchors=anchors, seen=seen)
    assert (kept := seen.get(origin)) is not None and kept.size == 22
