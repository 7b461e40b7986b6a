"""Crash safety: SIGKILL a writer at random moments; nothing reported committed is lost."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.audit import FileAnchorSink, verify_audit_dir
from service.audit.recover import find_incomplete, remove_incomplete
from service.keys.store import Signer, TrustStore, init_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PROJECT = Path(__file__).resolve().parents[3]
KILLS = 50

CHILD = """
import os, sys
from pathlib import Path
from service.audit import AuditLog
from service.keys.store import Signer

audit_dir, key, report = sys.argv[1:4]
log = AuditLog(
    Path(audit_dir),
    Signer.from_file(Path(key), "audit"),
    checkpoint_every=20,
    checkpoint_seconds=0.02,
    segment_bytes=12 * 1024,
)
fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, f"log {log.log_id}\\n".encode())
n = 0
while True:
    seq = log.append({
        "kind": "request", "request_id": f"r{n}", "action": "predict", "status": 200,
        "client": "127.0.0.1", "subject": "alice", "latency_ms": n / 7,
        "decision": {"allow": True, "reasons": [], "decision_id": None},
    })
    os.write(fd, f"{seq}\\n".encode())  # reported only after append returned
    n += 1
"""


def _start(audit_dir: Path, key: Path, report: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(audit_dir), str(key), str(report)],
        cwd=PROJECT,
        env=env,
        stderr=subprocess.DEVNULL,
    )


def _reported(report: Path) -> tuple[str, list[int]]:
    lines = report.read_bytes().split(b"\n")[:-1]  # a cut-off last report line is ignored
    log_id = lines[0].decode().removeprefix("log ")
    return log_id, [int(x) for x in lines[1:]]


def _wait_for_appends(report: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if report.exists() and report.read_bytes().count(b"\n") >= 3:
            return
        time.sleep(0.005)
    raise AssertionError(f"writer did not start appending (exit code {proc.poll()})")


def _segment_state(log_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(log_dir.glob("segment-*.jsonl"))}


def test_sigkill_during_appends_loses_no_committed_record(tmp_path: Path):
    key = init_keys(tmp_path / "keys", ["audit"])[0].private_path
    trust = TrustStore.from_public_keys([Signer.from_file(key, "audit").public_key])
    audit_dir = tmp_path / "audit"
    rng = random.Random(7)
    committed: dict[str, list[int]] = {}
    frozen: dict[str, dict[str, bytes]] = {}
    for round_ in range(KILLS // 2):  # two writers at a time, each killed at a random moment
        reports = [tmp_path / f"report-{round_}-{i}" for i in range(2)]
        procs = [_start(audit_dir, key, report) for report in reports]
        for proc, report in zip(procs, reports, strict=True):
            _wait_for_appends(report, proc)
        time.sleep(rng.uniform(0, 0.05))
        for proc in procs:
            time.sleep(rng.uniform(0, 0.01))
            os.kill(proc.pid, signal.SIGKILL)
        for proc, report in zip(procs, reports, strict=True):
            assert proc.wait(timeout=10) == -signal.SIGKILL
            log_id, seqs = _reported(report)
            assert seqs == list(range(len(seqs)))
            committed[log_id] = seqs
            frozen[log_id] = _segment_state(audit_dir / log_id)

    assert len(committed) == KILLS  # every writer started its own chain
    for log_id, state in frozen.items():  # later writers never touched a crashed log
        assert _segment_state(audit_dir / log_id) == state

    anchors_path = audit_dir.parent / "audit-anchors.jsonl"
    remove_incomplete(find_incomplete(audit_dir, anchors_path=anchors_path))
    report = verify_audit_dir(audit_dir, trust, anchors=FileAnchorSink(anchors_path))
    last_seq = {log.log_id: log.last_seq for log in report.logs}
    for log_id, seqs in committed.items():
        assert seqs, f"writer {log_id} reported nothing"
        assert last_seq[log_id] >= seqs[-1], f"{log_id} lost committed records"
