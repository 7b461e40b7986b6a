"""The real service (BentoML, two workers) with its monitors and review queue in PostgreSQL.

A stack of its own, started with ``ZTML_MONITOR_URL`` naming a PostgreSQL server that the
tests stop and start again under it: requests are refused with 503 while the store is
gone, each audited, and served again once it is back, by the same service processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from service.toolchain.postgres import LocalPostgres, local_postgres
from tests.service.app.harness import (
    Stack,
    digit_rows,
    events_for,
    install_demo_model,
    wait_for,
)
from tests.service.app.test_app_resilience import pgd_rows

pytestmark = [pytest.mark.system, pytest.mark.postgres]


@dataclass
class SharedStack:
    """The stack and the PostgreSQL server holding its monitors' state."""

    stack: Stack
    store: LocalPostgres


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, demo_model_source: Path
) -> Iterator[SharedStack]:
    from service.stack.runner import StackOptions, start_stack
    from service.stack.state import clear_state

    home = tmp_path_factory.mktemp("ztml-shared-home")
    with local_postgres(database="monitor") as store, pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZTML_HOME", str(home))
        model = install_demo_model(home, demo_model_source)
        state = start_stack(
            StackOptions(
                home=home,
                model_path=model.path,
                model_digest=model.digest,
                workers=2,
                extra_env={"ZTML_MONITOR_URL": store.url, "ZTML_RATE_BURST": "12"},
            )
        )
        running = Stack.started(home, state, model)
        try:
            yield SharedStack(running, store)
        finally:
            running.stop()
            clear_state(home)


def predict(stack: Stack, sub: str, rows: list[list[float]]) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/predict",
        json={"instances": rows},
        headers=stack.headers(sub),
        timeout=60,
        verify=stack.tls,
    )


def test_state_is_kept_in_the_shared_store_not_in_home(shared: SharedStack) -> None:
    import psycopg

    assert predict(shared.stack, "kept", digit_rows(1)).status_code == 200
    with psycopg.connect(shared.store.url) as conn:
        (buckets,) = conn.execute(
            "SELECT count(*) FROM ztml_monitor_buckets WHERE subject = 'demo/kept'"
        ).fetchone() or (0,)
    assert buckets == 1
    assert not (shared.stack.home / "run" / "monitor.db").exists()


def test_store_outage_is_503_audited_and_service_recovers_without_restart(
    shared: SharedStack,
) -> None:
    stack = shared.stack
    rows = digit_rows(1)
    assert predict(stack, "outage", rows).status_code == 200
    shared.store.stop()
    try:
        during = [predict(stack, "outage", rows) for _ in range(4)]
    finally:
        shared.store.start()
    assert [r.status_code for r in during] == [503] * 4
    for response in during:
        error = response.json()["error"]
        assert error["code"] == "monitor_unavailable"
        assert set(error) == {"code", "message", "request_id"}
        assert error["request_id"] == response.headers["x-request-id"]
        assert "postgresql" not in response.text and "127.0.0.1" not in response.text
        events = events_for(stack.home, response.headers["x-request-id"])
        assert [e["status"] for e in events if e["kind"] == "request"] == [503]
    assert wait_for(lambda: predict(stack, "outage", rows).status_code == 200, timeout=20)
    after = [predict(stack, "outage", rows).status_code for _ in range(4)]
    assert after == [200] * 4  # every worker is back on the store
    os.kill(stack.service_pid, 0)  # the same service process served throughout


def test_flagged_request_is_queued_in_the_shared_queue_and_listed_by_the_cli(
    shared: SharedStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from service.cli.main import app

    response = predict(shared.stack, "reviewed", pgd_rows(shared.stack, 20, eps=0.3))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["review_id"] is not None
    # Another pod's view: its own home, the same URL.
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "other-pod"))
    monkeypatch.setenv("ZTML_MONITOR_URL", shared.store.url)
    listed = CliRunner().invoke(app, ["review", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    ids = {r["id"]: r["request_id"] for r in json.loads(listed.output)}
    assert ids[body["review_id"]] == body["request_id"]
    assert not (shared.stack.home / "review.db").exists()
