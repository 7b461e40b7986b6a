"""The review queue shared by replicas in PostgreSQL, and ``ztml review`` against it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli.main import app
from service.review import ReviewQueue, ReviewStateError, ReviewStoreError
from service.review.postgres import SCHEMA, TABLE
from service.toolchain.postgres import LocalPostgres, fresh_database, local_postgres
from tests.service.review.test_review_queue import item_fields

pytestmark = [pytest.mark.system, pytest.mark.postgres]
runner = CliRunner()


@pytest.fixture
def url(postgres_url: str, request: pytest.FixtureRequest) -> str:
    return fresh_database(postgres_url, "r_" + request.node.name.lower()[:50])


def test_items_added_by_one_replica_are_read_by_another(url: str) -> None:
    with ReviewQueue(url) as first, ReviewQueue(url) as second:
        item_id = first.add(**item_fields(request_id="from-pod-a"))
        item = second.get(item_id)
    assert (item.request_id, item.subject, item.status) == ("from-pod-a", "alice", "open")
    assert np.array(item.instances).shape == (2, 64)
    assert item.suspicion == pytest.approx(0.8)


def test_list_filters_by_status_oldest_first(url: str) -> None:
    with ReviewQueue(url) as queue:
        ids = [queue.add(**item_fields(request_id=f"r{n}")) for n in range(3)]
        queue.resolve(ids[1], verdict="benign", reviewer="carol", note="ok")
        assert [i.id for i in queue.list()] == [ids[0], ids[2]]
        assert [i.id for i in queue.list("resolved")] == [ids[1]]
        assert [i.id for i in queue.list("all")] == ids


def test_two_reviewers_racing_resolve_an_item_once(url: str) -> None:
    with ReviewQueue(url) as queue:
        item_id = queue.add(**item_fields())

    def resolve(verdict: str) -> str:
        with ReviewQueue(url) as mine:
            try:
                mine.resolve(item_id, verdict=verdict, reviewer=verdict, note="")  # type: ignore[arg-type]
            except ReviewStateError:
                return "refused"
            return "resolved"

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = sorted(pool.map(resolve, ["benign", "malicious"]))
    assert outcomes == ["refused", "resolved"]


def test_review_cli_reads_the_shared_queue_named_by_the_environment(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "pod-home"))
    monkeypatch.setenv("ZTML_MONITOR_URL", url)
    with ReviewQueue(url) as queue:
        item_id = queue.add(**item_fields(request_id="seen-by-pod-b"))
    listed = runner.invoke(app, ["review", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["request_id"] for r in json.loads(listed.output)] == ["seen-by-pod-b"]
    resolved = runner.invoke(
        app, ["review", "resolve", str(item_id), "--verdict", "malicious", "--note", "PGD"]
    )
    assert resolved.exit_code == 0, resolved.output
    shown = runner.invoke(app, ["review", "show", str(item_id), "--json"])
    assert json.loads(shown.output)["verdict"] == "malicious"
    assert not (tmp_path / "pod-home" / "review.db").exists()


def test_db_option_takes_a_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZTML_MONITOR_URL", raising=False)
    with ReviewQueue(url) as queue:
        queue.add(**item_fields(request_id="by-url"))
    listed = runner.invoke(app, ["review", "list", "--json", "--db", url])
    assert [r["request_id"] for r in json.loads(listed.output)] == ["by-url"]


@pytest.fixture
def restartable() -> Iterator[LocalPostgres]:
    with local_postgres(database="review") as server:
        yield server


def test_outage_is_a_store_error_and_the_queue_recovers(restartable: LocalPostgres) -> None:
    with ReviewQueue(restartable.url) as queue:
        queue.add(**item_fields(request_id="before"))
        restartable.stop()
        with pytest.raises(ReviewStoreError, match="review queue"):
            queue.add(**item_fields(request_id="during"))
        restartable.start()
        queue.add(**item_fields(request_id="after"))
        assert [i.request_id for i in queue.list()] == ["before", "after"]


def test_unreachable_queue_fails_without_the_password() -> None:
    queue = ReviewQueue("postgresql://ztml:hunter2@127.0.0.1:9/ztml")
    with queue, pytest.raises(ReviewStoreError) as caught:
        queue.list()
    assert "hunter2" not in str(caught.value)


FEATURE_NAMES = tuple(f"mean radius {n}" for n in range(30))


def test_tabular_item_with_feature_names_round_trips_and_shows(url: str) -> None:
    rows = np.arange(60, dtype=np.float64).reshape(2, 30) / 4
    with ReviewQueue(url) as first, ReviewQueue(url) as second:
        item_id = first.add(**item_fields(instances=rows, features=list(FEATURE_NAMES)))
        item = second.get(item_id)
    assert item.features == FEATURE_NAMES
    assert item.layout is None
    assert np.array(item.instances) == pytest.approx(rows)
    shown = runner.invoke(app, ["review", "show", str(item_id), "--db", url])
    assert shown.exit_code == 0, shown.output
    assert "mean radius 29" in shown.output
    assert "14.75" in shown.output  # instances[1], mean radius 29


def test_image_layout_round_trips(url: str) -> None:
    with ReviewQueue(url) as queue:
        item = queue.get(queue.add(**item_fields(instances=np.zeros((1, 48)), layout=(3, 4, 4))))
    assert (item.layout, item.features) == ((3, 4, 4), None)


def test_a_table_from_before_layouts_is_read_and_upgraded(url: str) -> None:
    import psycopg

    legacy_table = SCHEMA[0]  # unchanged: the column comes from a later ALTER TABLE
    assert "input_schema" not in legacy_table
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(legacy_table)
        conn.execute(
            f"INSERT INTO {TABLE} (request_id, reasons, suspicion, instances, created) "  # noqa: S608
            "VALUES ('legacy', '[\"old\"]', 0.5, %s, '2024-01-01T00:00:00Z')",
            (json.dumps([[0.5] * 64]),),
        )
    with ReviewQueue(url) as queue:
        legacy = queue.get(1)
        new_id = queue.add(**item_fields(instances=np.zeros((1, 30)), features=FEATURE_NAMES))
        assert queue.get(new_id).features == FEATURE_NAMES
    assert (legacy.request_id, legacy.layout, legacy.features) == ("legacy", None, None)
    assert legacy.is_image
