"""The SQLite review queue: fields, states, permissions and several processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.review import (
    ReviewInputError,
    ReviewNotFoundError,
    ReviewQueue,
    ReviewStateError,
    ReviewStoreError,
)

DIGEST = "sha256:" + "ab" * 32


def item_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "subject": "alice",
        "tenant": "demo",
        "model_digest": DIGEST,
        "reasons": ["feature squeezing score 0.41 > 0.12"],
        "suspicion": 0.8,
        "input_digest": DIGEST,
        "instances": np.full((2, 64), 0.25, dtype=np.float32),
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def queue(tmp_path: Path) -> Any:
    with ReviewQueue(tmp_path / "state" / "review.db") as q:
        yield q


def test_added_item_is_stored_with_all_fields(queue: ReviewQueue) -> None:
    item = queue.get(queue.add(**item_fields()))
    assert (item.request_id, item.subject, item.tenant) == ("req-1", "alice", "demo")
    assert item.model_digest == DIGEST
    assert item.input_digest == DIGEST
    assert item.reasons == ("feature squeezing score 0.41 > 0.12",)
    assert item.suspicion == pytest.approx(0.8)
    assert np.array(item.instances).shape == (2, 64)
    assert item.status == "open"
    assert item.verdict is None
    assert item.created.endswith("Z")


def test_database_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "home" / "review.db"
    with ReviewQueue(path) as q:
        q.add(**item_fields())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for sidecar in path.parent.glob("review.db-*"):
        assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0


def test_database_uses_wal(queue: ReviewQueue) -> None:
    mode = queue._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_world_readable_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "review.db"
    ReviewQueue(path).close()
    os.chmod(path, 0o644)
    with pytest.raises(ReviewStoreError, match="chmod 600"):
        ReviewQueue(path)


def test_corrupt_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "review.db"
    path.write_bytes(b"this is not sqlite" * 100)
    os.chmod(path, 0o600)
    with pytest.raises(ReviewStoreError, match="not usable"):
        ReviewQueue(path)


def test_list_filters_by_status(queue: ReviewQueue) -> None:
    first = queue.add(**item_fields(request_id="a"))
    second = queue.add(**item_fields(request_id="b"))
    queue.resolve(first, verdict="benign", reviewer="bob", note="")
    assert [i.id for i in queue.list()] == [second]
    assert [i.id for i in queue.list("resolved")] == [first]
    assert [i.id for i in queue.list("all")] == [first, second]


def test_unknown_status_is_rejected(queue: ReviewQueue) -> None:
    with pytest.raises(ReviewInputError, match="unknown status"):
        queue.list("closed")  # type: ignore[arg-type]


def test_resolve_records_verdict_reviewer_note_and_time(queue: ReviewQueue) -> None:
    item = queue.resolve(
        queue.add(**item_fields()), verdict="malicious", reviewer="bob", note="PGD noise"
    )
    assert (item.status, item.verdict, item.reviewer, item.note) == (
        "resolved",
        "malicious",
        "bob",
        "PGD noise",
    )
    assert item.resolved is not None


def test_resolving_twice_is_refused_and_keeps_the_first_verdict(queue: ReviewQueue) -> None:
    item_id = queue.add(**item_fields())
    queue.resolve(item_id, verdict="benign", reviewer="bob", note="fine")
    with pytest.raises(ReviewStateError, match="already resolved as benign by bob"):
        queue.resolve(item_id, verdict="malicious", reviewer="eve", note="overwrite")
    assert queue.get(item_id).verdict == "benign"


def test_missing_id_is_reported(queue: ReviewQueue) -> None:
    with pytest.raises(ReviewNotFoundError, match="no review item with id 42"):
        queue.resolve(42, verdict="benign", reviewer="bob", note="")
    with pytest.raises(ReviewNotFoundError):
        queue.get(42)


def test_unknown_verdict_is_rejected(queue: ReviewQueue) -> None:
    item_id = queue.add(**item_fields())
    with pytest.raises(ReviewInputError, match="unknown verdict"):
        queue.resolve(item_id, verdict="maybe", reviewer="bob", note="")  # type: ignore[arg-type]
    assert queue.get(item_id).status == "open"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"suspicion": 1.5}, "suspicion"),
        ({"suspicion": float("nan")}, "suspicion"),
        ({"reasons": []}, "reasons"),
        ({"request_id": ""}, "request_id"),
        ({"instances": np.zeros((2, 63))}, "instances"),
        ({"instances": np.full((1, 64), np.inf)}, "finite"),
        ({"instances": [["x"] * 64]}, "instances"),
    ],
)
def test_malformed_fields_are_rejected(
    queue: ReviewQueue, overrides: dict[str, Any], match: str
) -> None:
    with pytest.raises(ReviewInputError, match=match):
        queue.add(**item_fields(**overrides))


def test_items_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "review.db"
    with ReviewQueue(path) as q:
        item_id = q.add(**item_fields())
    with ReviewQueue(path) as q:
        assert q.get(item_id).request_id == "req-1"


def _add_many(path: str, worker: int, count: int) -> None:
    with ReviewQueue(path) as q:
        for n in range(count):
            q.add(**item_fields(request_id=f"w{worker}-{n}"))


def test_several_processes_can_add_at_once(tmp_path: Path) -> None:
    path = tmp_path / "review.db"
    ReviewQueue(path).close()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_many, args=(str(path), w, 25)) for w in range(2)]
    for w in workers:
        w.start()
    _add_many(str(path), 9, 25)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    with ReviewQueue(path) as q:
        items = q.list("all")
    assert len(items) == 75
    assert len({i.id for i in items}) == 75
    assert len({i.request_id for i in items}) == 75


def _add_in_child(queue: ReviewQueue) -> None:
    inherited = queue._conn
    queue.add(**item_fields(request_id="from-child"))
    if queue._conn is inherited:
        raise SystemExit(3)  # wrote through the parent's SQLite connection


def test_a_queue_inherited_by_a_forked_worker_reconnects(tmp_path: Path) -> None:
    with ReviewQueue(tmp_path / "review.db") as queue:
        queue.add(**item_fields(request_id="from-parent"))
        child = multiprocessing.get_context("fork").Process(target=_add_in_child, args=(queue,))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
        assert {i.request_id for i in queue.list()} == {"from-parent", "from-child"}


class _CorruptCursor:
    def fetchall(self) -> list[Any]:
        raise sqlite3.DatabaseError("database disk image is malformed")


class _CorruptConnection:
    def execute(self, *args: Any) -> _CorruptCursor:
        return _CorruptCursor()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("read", ["list", "get"])
def test_a_failure_while_reading_rows_is_a_store_error(tmp_path: Path, read: str) -> None:
    queue = ReviewQueue(tmp_path / "review.db")
    queue._conn.close()
    queue._conn = _CorruptConnection()  # type: ignore[assignment]
    with pytest.raises(ReviewStoreError, match="malformed"):
        queue.list("all") if read == "list" else queue.get(1)
