from collections.abc import Callable
from pathlib import Path

from service.audit import AuditLog
from service.audit.reader import follow, last_records
from service.keys.store import Signer

WriteLog = Callable[..., AuditLog]


def test_last_records_merges_logs_by_time_and_skips_checkpoints(
    write_log: WriteLog, audit_dir: Path
):
    first = write_log(10, checkpoint_every=3)
    second = write_log(10, checkpoint_every=3)
    records = last_records(audit_dir, 12)
    assert len(records) == 12
    assert [r.sort_key for r in records] == sorted(r.sort_key for r in records)
    assert {r.log_id for r in records} <= {first.log_id, second.log_id}
    assert all(r.event["kind"] == "request" for r in records)


def test_last_records_ignores_an_incomplete_last_line(write_log: WriteLog, audit_dir: Path):
    log = write_log(3, close=False)
    with log.segment_path.open("ab") as handle:
        handle.write(b'{"event":{"kind":"req')
    assert [r.seq for r in last_records(audit_dir, 10)] == [0, 1, 2]


def test_follow_yields_only_events_appended_after_it_started(
    audit_dir: Path, signer: Signer, make_event: Callable[..., dict]
):
    log = AuditLog(audit_dir, signer, checkpoint_seconds=None)
    log.append(make_event())
    polls = iter([False, True])
    stream = follow(audit_dir, interval=0, stop=lambda: next(polls, True))
    log.append(make_event(request_id="new-1"))
    log.append(make_event(request_id="new-2"))
    log.close()
    assert [r.event["request_id"] for r in stream] == ["new-1", "new-2"]
