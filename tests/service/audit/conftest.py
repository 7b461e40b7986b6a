"""Fixtures for the audit log tests: keys in a temporary ZTML_HOME, events, written logs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.audit import AuditLog, FileAnchorSink, default_anchors_path
from service.chain.tlog import LogCheckpoint, TreeCheckpoint
from service.keys.store import Signer, TrustStore, init_keys

_counter = itertools.count()


@pytest.fixture(autouse=True)
def ztml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ZTML_HOME", str(home))
    return home


@pytest.fixture
def signer(ztml_home: Path) -> Signer:
    info = init_keys(ztml_home / "keys", ["audit"])[0]
    return Signer.from_file(info.private_path, "audit")


@pytest.fixture
def trust(signer: Signer) -> TrustStore:
    return TrustStore.from_public_keys([signer.public_key])


@pytest.fixture
def audit_dir(ztml_home: Path) -> Path:
    return ztml_home / "audit"


@pytest.fixture
def anchors(audit_dir: Path) -> FileAnchorSink:
    return FileAnchorSink(default_anchors_path(audit_dir))


def event(**overrides: Any) -> dict[str, Any]:
    """A valid request event; overrides replace fields (None values are kept)."""
    n = next(_counter)
    base: dict[str, Any] = {
        "time": f"2026-11-22T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z",
        "kind": "request",
        "request_id": f"req-{n:06d}",
        "subject": "alice",
        "tenant": "acme",
        "model_digest": "sha256:" + "ab" * 32,
        "action": "predict",
        "decision": {
            "allow": n % 7 != 0,
            "reasons": [] if n % 7 else ["rate"],
            "decision_id": f"d{n}",
        },
        "status": 200 if n % 7 else 403,
        "latency_ms": 1.5 + n % 13,
        "input_digest": "sha256:" + f"{n:064x}",
        "client": "10.0.0.7",
    }
    base.update(overrides)
    return base


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    return event


@pytest.fixture
def write_log(audit_dir: Path, signer: Signer) -> Callable[..., AuditLog]:
    """Write ``n`` events to a new log (closed unless ``close=False``)."""

    def write(n: int, *, close: bool = True, **options: Any) -> AuditLog:
        options.setdefault("checkpoint_seconds", None)
        log = AuditLog(audit_dir, signer, **options)
        for _ in range(n):
            log.append(event())
        if close:
            log.close()
        else:
            log.sync()  # its checkpoints so far are fsync'ed and anchored
        return log

    return write


def resigned(old: LogCheckpoint, signer: Signer) -> LogCheckpoint:
    """The same tree checkpoint signed by ``signer`` instead of the audit key."""
    tree = old.checkpoint
    return LogCheckpoint(
        old.log,
        TreeCheckpoint.create(origin=tree.origin, size=tree.size, root=tree.root, signer=signer),
    )
