import json
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.audit import (
    AnchorError,
    AuditEventError,
    AuditLog,
    AuditWriteError,
    FileAnchorSink,
    fast_encode,
    open_audit_log,
    verify_audit_dir,
)
from service.chain.core import GENESIS_HASH, link_hash
from service.chain.merkle import MerkleTree, leaf_hash
from service.chain.tlog import AnyCheckpoint, LogCheckpoint
from service.keys.store import Signer, TrustStore

MakeEvent = Callable[..., dict[str, Any]]
WriteLog = Callable[..., AuditLog]


def _lines(log: AuditLog) -> list[dict[str, Any]]:
    out = []
    for path in sorted(log.log_dir.glob("segment-*.jsonl")):
        out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


def test_append_returns_consecutive_sequence_numbers(
    audit_dir: Path, signer: Signer, make_event: MakeEvent
):
    with AuditLog(audit_dir, signer, checkpoint_seconds=None) as log:
        assert [log.append(make_event()) for _ in range(5)] == [0, 1, 2, 3, 4]
        assert log.last_seq == 4


def test_each_record_is_hash_linked_with_the_fast_encoding(write_log: WriteLog):
    log = write_log(20)
    prev = GENESIS_HASH
    for record in (r for r in _lines(log) if "event" in r):
        assert record["prev"] == prev
        assert record["hash"] == link_hash(
            record["seq"], record["prev"], record["event"], encode=fast_encode
        )
        prev = record["hash"]


def test_each_line_is_the_fast_encoding_of_its_record(write_log: WriteLog):
    log = write_log(5)
    raw = (log.log_dir / "segment-000001.jsonl").read_bytes().splitlines()
    assert all(fast_encode(json.loads(line)) == line for line in raw)


def test_a_refused_event_writes_nothing(audit_dir: Path, signer: Signer, make_event: MakeEvent):
    with AuditLog(audit_dir, signer, checkpoint_seconds=None) as log:
        with pytest.raises(AuditEventError):
            log.append(make_event(token="secret"))
        assert log.segment_path.read_bytes() == b""
        assert log.append(make_event()) == 0


def test_checkpoints_are_written_every_n_events_and_anchored(
    write_log: WriteLog, anchors: FileAnchorSink, trust: TrustStore
):
    log = write_log(25, checkpoint_every=10)
    cps = [LogCheckpoint.from_dict(r["checkpoint"]) for r in _lines(log) if "checkpoint" in r]
    assert [cp.seq for cp in cps] == [9, 19, 24]  # 24: written by close()
    assert anchors.anchors(log.log_id) == cps
    for cp in cps:
        cp.verify(trust)
        assert cp.log == log.log_id


def test_rotation_ends_each_full_segment_with_a_checkpoint(write_log: WriteLog):
    log = write_log(200, segment_bytes=4096, checkpoint_every=1000)
    segments = sorted(log.log_dir.glob("segment-*.jsonl"))
    assert len(segments) > 3
    for path in segments:
        last = json.loads(path.read_bytes().splitlines()[-1])
        assert "checkpoint" in last
        assert path.stat().st_size < 4096 + 2048


def test_close_is_idempotent_and_closes_the_log(
    audit_dir: Path, signer: Signer, make_event: MakeEvent
):
    log = AuditLog(audit_dir, signer, checkpoint_seconds=None)
    log.append(make_event())
    log.close()
    log.close()
    with pytest.raises(AuditWriteError, match="closed"):
        log.append(make_event())


def test_closing_an_empty_log_writes_no_checkpoint(audit_dir: Path, signer: Signer):
    log = AuditLog(audit_dir, signer, checkpoint_seconds=None)
    log.close()
    assert log.segment_path.read_bytes() == b""


def test_an_idle_log_is_checkpointed_by_time(
    audit_dir: Path, signer: Signer, make_event: MakeEvent, anchors: FileAnchorSink
):
    with AuditLog(audit_dir, signer, checkpoint_seconds=0.05, checkpoint_every=1000) as log:
        log.append(make_event())
        deadline = time.monotonic() + 10
        while not anchors.anchors(log.log_id) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [cp.seq for cp in anchors.anchors(log.log_id)] == [0]


def test_every_instance_starts_a_new_chain(write_log: WriteLog, audit_dir: Path):
    first = write_log(3)
    second = write_log(3)
    assert first.log_id != second.log_id
    assert sorted(p.name for p in audit_dir.iterdir()) == sorted([first.log_id, second.log_id])


def test_concurrent_threads_produce_one_valid_chain(
    audit_dir: Path,
    signer: Signer,
    make_event: MakeEvent,
    trust: TrustStore,
    anchors: FileAnchorSink,
):
    log = AuditLog(audit_dir, signer, checkpoint_every=37, segment_bytes=32 * 1024)
    seqs: list[int] = []

    def work() -> None:
        got = [log.append(make_event()) for _ in range(300)]
        seqs.extend(got)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert sorted(seqs) == list(range(1200))
    report = verify_audit_dir(audit_dir, trust, anchors=anchors)
    assert report.events == 1200


def test_mirroring_prints_each_record_as_one_json_line(
    audit_dir: Path, signer: Signer, make_event: MakeEvent, capsys: pytest.CaptureFixture[str]
):
    with AuditLog(audit_dir, signer, mirror_stdout=True, checkpoint_seconds=None) as log:
        ev = make_event()
        log.append(ev)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 1
    assert printed[0]["audit_log"] == log.log_id
    assert printed[0]["seq"] == 0
    assert printed[0]["event"]["request_id"] == ev["request_id"]


def test_mirroring_is_off_by_default(write_log: WriteLog, capsys: pytest.CaptureFixture[str]):
    write_log(3)
    assert capsys.readouterr().out == ""


def test_log_files_are_private(write_log: WriteLog, audit_dir: Path):
    log = write_log(3)
    assert stat.S_IMODE(audit_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.log_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.segment_path.stat().st_mode) == 0o600


def test_a_failing_anchor_sink_loses_no_event(
    audit_dir: Path, signer: Signer, make_event: MakeEvent, trust: TrustStore
):
    class Broken:
        def anchor(self, cp: AnyCheckpoint) -> None:
            raise AnchorError("ledger down")

        def anchors(self, log: str) -> list[AnyCheckpoint]:
            return []

    log = AuditLog(audit_dir, signer, anchor_sink=Broken(), checkpoint_every=5)
    for _ in range(12):
        log.append(make_event())
    log.close()
    assert log.anchor_failures == 3
    assert verify_audit_dir(audit_dir, trust).events == 12


@pytest.mark.parametrize("mode", ["always", "checkpoint", "never"])
def test_every_durability_setting_writes_a_valid_log(
    write_log: WriteLog, mode: str, audit_dir: Path, trust: TrustStore, anchors: FileAnchorSink
):
    write_log(30, fsync=mode, checkpoint_every=7)
    assert verify_audit_dir(audit_dir, trust, anchors=anchors).events == 30


def test_an_unknown_durability_setting_is_refused(audit_dir: Path, signer: Signer):
    with pytest.raises(AuditWriteError, match="fsync"):
        AuditLog(audit_dir, signer, fsync="sometimes")  # type: ignore[arg-type]


def test_an_uncreatable_directory_is_a_clear_error(tmp_path: Path, signer: Signer):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AuditWriteError, match="Cannot create audit directory"):
        AuditLog(blocker / "audit", signer)
    assert blocker.read_text() == "not a directory"


def test_a_log_refuses_appends_from_another_process(
    audit_dir: Path, signer: Signer, make_event: MakeEvent
):
    log = AuditLog(audit_dir, signer, checkpoint_seconds=None)
    log._pid = -1  # as seen from a forked child
    with pytest.raises(AuditWriteError, match="its own AuditLog"):
        log.append(make_event())


def test_open_audit_log_uses_the_audit_key_of_ztml_home(
    ztml_home: Path, signer: Signer, make_event: MakeEvent
):
    with open_audit_log(checkpoint_seconds=None) as log:
        log.append(make_event())
    assert log.directory == ztml_home / "audit"
    assert (ztml_home / "audit-anchors.jsonl").exists()


def test_open_audit_log_refuses_a_key_readable_by_others(
    ztml_home: Path, signer: Signer, audit_dir: Path
):
    key = ztml_home / "keys" / "audit.key"
    key.chmod(0o644)
    with pytest.raises(AuditWriteError, match="chmod 600"):
        open_audit_log()
    assert not audit_dir.exists()


def test_open_audit_log_reports_a_missing_key(tmp_path: Path):
    with pytest.raises(AuditWriteError, match="ztml keys init"):
        open_audit_log(tmp_path / "audit", key_path=tmp_path / "nope.key")


def test_a_forked_child_cannot_append_to_its_parents_chain(
    audit_dir: Path, signer: Signer, make_event: MakeEvent
):
    log = AuditLog(audit_dir, signer, checkpoint_seconds=None)
    pid = os.fork()
    if pid == 0:  # the child: must be refused, and must not write a line
        try:
            log.append(make_event())
        except AuditWriteError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert log.segment_path.read_bytes() == b""
    assert log.append(make_event()) == 0
    log.close()


def test_an_explicit_checkpoint_is_anchored_before_it_returns(
    audit_dir: Path, signer: Signer, make_event: MakeEvent, anchors: FileAnchorSink
):
    with AuditLog(audit_dir, signer, checkpoint_seconds=None) as log:
        log.append(make_event())
        log.append(make_event())
        cp = log.checkpoint()
        assert cp is not None
        records = [x for x in log.segment_path.read_bytes().split(b"\n") if x[:9] == b'{"event":']
        assert (cp.seq, cp.root) == (1, MerkleTree(leaf_hash(x) for x in records).root())
        assert anchors.anchors(log.log_id) == [cp]
        assert log.checkpoint() is None  # nothing new to sign
