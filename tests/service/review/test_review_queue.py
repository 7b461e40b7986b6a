"""The SQLite review queue: fields, states, permissions and several processes."""

from __future__ import annotations

import json
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
        ({"instances": np.zeros((2, 0))}, "instances"),
        ({"instances": np.zeros(64)}, "instances"),
        ({"instances": np.zeros((1, 1_000_001), dtype=np.float32)}, "1000000"),
        ({"instances": np.zeros((1025, 4))}, "1024"),
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


BREAST_CANCER_NAMES = tuple(f"feature {n}" for n in range(30))


def test_tabular_item_keeps_its_feature_names(queue: ReviewQueue) -> None:
    rows = np.linspace(0.0, 1.0, 60).reshape(2, 30)
    item_id = queue.add(**item_fields(instances=rows, features=list(BREAST_CANCER_NAMES)))
    item = queue.get(item_id)
    assert item.features == BREAST_CANCER_NAMES
    assert item.layout is None
    assert np.array(item.instances) == pytest.approx(rows)
    assert not item.is_image


def test_image_item_keeps_its_layout_and_nchw_inputs_are_flattened(queue: ReviewQueue) -> None:
    images = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4) / 96
    item = queue.get(queue.add(**item_fields(instances=images, layout=(3, 4, 4))))
    assert item.layout == (3, 4, 4)
    assert item.features is None
    assert np.array(item.instances) == pytest.approx(images.reshape(2, 48))
    assert item.is_image


@pytest.mark.parametrize("width", [1, 7, 100_000])
def test_rows_of_any_width_are_accepted(queue: ReviewQueue, width: int) -> None:
    item = queue.get(queue.add(**item_fields(instances=np.ones((1, width)))))
    assert len(item.instances[0]) == width
    assert (item.layout, item.features) == (None, None)


def test_64_unnamed_values_without_layout_are_the_digits_image(queue: ReviewQueue) -> None:
    item = queue.get(queue.add(**item_fields()))
    assert (item.layout, item.features) == (None, None)
    assert item.is_image


def test_layout_and_feature_names_are_in_the_json_form(queue: ReviewQueue) -> None:
    item = queue.get(queue.add(**item_fields(instances=np.zeros((1, 48)), layout=(3, 4, 4))))
    assert item.to_dict()["layout"] == [3, 4, 4]
    assert "features" not in item.to_dict()


def test_digits_items_read_as_before_in_the_json_form(queue: ReviewQueue) -> None:
    fields = queue.get(queue.add(**item_fields())).to_dict()
    assert "layout" not in fields
    assert "features" not in fields


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"layout": (1, 8, 7)}, "layout .* 56 values .* 64 features"),
        ({"layout": (8, 8)}, "layout must be"),
        ({"layout": (1, 0, 64)}, "layout must be"),
        ({"layout": (1.0, 8, 8)}, "layout must be"),
        ({"layout": "1x8x8"}, "layout must be"),
        ({"features": [f"f{n}" for n in range(63)]}, "features has 63 names .* 64"),
        ({"features": "pixel"}, "features must be"),
        ({"features": ["ok"] * 63 + [""]}, "features must be non-empty"),
        ({"features": ["ok"] * 63 + [7]}, "features must be"),
    ],
)
def test_malformed_layout_or_feature_names_are_rejected(
    queue: ReviewQueue, overrides: dict[str, Any], match: str
) -> None:
    with pytest.raises(ReviewInputError, match=match):
        queue.add(**item_fields(**overrides))
    assert queue.list("all") == []


#: The table as queued before items described their inputs (no ``input_schema``).
LEGACY_SCHEMA = """
CREATE TABLE review_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL, subject TEXT, tenant TEXT, model_digest TEXT,
    reasons TEXT NOT NULL, suspicion REAL NOT NULL, input_digest TEXT,
    instances TEXT NOT NULL, created TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    verdict TEXT CHECK (verdict IS NULL OR verdict IN ('benign', 'malicious')),
    reviewer TEXT, note TEXT, resolved TEXT
);
CREATE INDEX review_items_status ON review_items (status, id);
"""


def _legacy_database(path: Path) -> None:
    """A queue file as the 64-feature-only queue wrote it: one open digits item."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_SCHEMA)
    conn.execute(
        "INSERT INTO review_items (request_id, subject, tenant, reasons, suspicion, "
        "instances, created) VALUES ('legacy', 'alice', 'demo', '[\"old\"]', 0.5, ?, ?)",
        (json.dumps([[0.5] * 64]), "2024-01-01T00:00:00Z"),
    )
    conn.commit()
    conn.close()
    path.chmod(0o600)


def test_a_database_from_before_layouts_is_read_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "state" / "review.db"
    _legacy_database(path)
    with ReviewQueue(path) as q:
        legacy = q.get(1)
        new_id = q.add(**item_fields(instances=np.zeros((1, 30)), features=BREAST_CANCER_NAMES))
        assert q.get(new_id).features == BREAST_CANCER_NAMES
        assert [i.request_id for i in q.list("all")] == ["legacy", "req-1"]
    assert (legacy.request_id, legacy.layout, legacy.features) == ("legacy", None, None)
    assert np.array(legacy.instances).shape == (1, 64)
    assert legacy.is_image
