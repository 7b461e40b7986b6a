"""``ztml review list|show|resolve`` through Typer's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli.main import app
from service.review import ReviewQueue

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "ztml"))
    monkeypatch.delenv("ZTML_MONITOR_URL", raising=False)
    return tmp_path / "ztml"


def add_item(db: Path, request_id: str = "req-1") -> int:
    image = np.zeros((8, 8))
    image[1:7, 3:5] = 1.0  # a "1"
    with ReviewQueue(db) as q:
        return q.add(
            request_id=request_id,
            subject="alice",
            tenant="demo",
            model_digest="sha256:" + "cd" * 32,
            reasons=["feature squeezing score 0.41 > 0.12"],
            suspicion=0.77,
            input_digest="sha256:" + "ef" * 32,
            instances=image.reshape(1, 64),
        )


def test_list_shows_open_items_from_the_default_database(home: Path) -> None:
    add_item(home / "review.db")
    result = runner.invoke(app, ["review", "list"])
    assert result.exit_code == 0, result.output
    assert "alice" in result.output
    assert "0.77" in result.output


def test_list_json_omits_inputs(home: Path) -> None:
    add_item(home / "review.db")
    result = runner.invoke(app, ["review", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[0]["request_id"] == "req-1"
    assert "instances" not in rows[0]


def test_list_status_filter(home: Path) -> None:
    item_id = add_item(home / "review.db")
    runner.invoke(app, ["review", "resolve", str(item_id), "--verdict", "benign", "--note", "ok"])
    assert json.loads(runner.invoke(app, ["review", "list", "--json"]).output) == []
    resolved = runner.invoke(app, ["review", "list", "--status", "resolved", "--json"])
    assert [r["id"] for r in json.loads(resolved.output)] == [item_id]


def test_show_prints_details_and_a_heatmap(home: Path) -> None:
    item_id = add_item(home / "review.db")
    result = runner.invoke(app, ["review", "show", str(item_id)])
    assert result.exit_code == 0, result.output
    assert "req-1" in result.output
    assert "instances[0]" in result.output
    assert "@@@@" in result.output  # the bright stroke of the "1"


def test_resolve_with_note_and_reviewer(home: Path) -> None:
    item_id = add_item(home / "review.db")
    result = runner.invoke(
        app,
        [
            "review",
            "resolve",
            str(item_id),
            "--verdict",
            "malicious",
            "--note",
            "PGD",
            "--reviewer",
            "carol",
        ],
    )
    assert result.exit_code == 0, result.output
    with ReviewQueue(home / "review.db") as q:
        item = q.get(item_id)
    assert (item.verdict, item.reviewer, item.note) == ("malicious", "carol", "PGD")


def test_explicit_db_option_is_used(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "queue.db"
    add_item(other, request_id="from-other-db")
    result = runner.invoke(app, ["review", "list", "--json", "--db", str(other)])
    assert json.loads(result.output)[0]["request_id"] == "from-other-db"


def test_show_missing_id_fails_with_clear_message(home: Path) -> None:
    result = runner.invoke(app, ["review", "show", "99"])
    assert result.exit_code == 1
    assert "no review item with id 99" in result.output
    assert "Traceback" not in result.output


def test_resolve_missing_id_fails(home: Path) -> None:
    result = runner.invoke(app, ["review", "resolve", "99", "--verdict", "benign", "--note", "ok"])
    assert result.exit_code == 1
    assert "no review item with id 99" in result.output


def test_resolve_twice_fails(home: Path) -> None:
    item_id = add_item(home / "review.db")
    runner.invoke(app, ["review", "resolve", str(item_id), "--verdict", "benign", "--note", "ok"])
    result = runner.invoke(
        app, ["review", "resolve", str(item_id), "--verdict", "malicious", "--note", "x"]
    )
    assert result.exit_code == 1
    assert "already resolved" in result.output


def test_bad_verdict_is_rejected(home: Path) -> None:
    item_id = add_item(home / "review.db")
    result = runner.invoke(
        app, ["review", "resolve", str(item_id), "--verdict", "maybe", "--note", "x"]
    )
    assert result.exit_code != 0
    assert "maybe" in result.output
    assert "benign" in result.output


def test_non_numeric_id_is_rejected(home: Path) -> None:
    result = runner.invoke(app, ["review", "show", "abc"])
    assert result.exit_code != 0
    assert "valid integer" in result.output


def test_loose_database_permissions_fail_closed(home: Path) -> None:
    db = home / "review.db"
    add_item(db)
    db.chmod(0o644)
    result = runner.invoke(app, ["review", "list"])
    assert result.exit_code == 1
    assert "chmod 600" in result.output


def test_stored_strings_are_not_interpreted_as_markup(home: Path) -> None:
    with ReviewQueue(home / "review.db") as q:
        q.add(
            request_id="req-1",
            subject="[bold red]mallory[/bold red]\x1b[2J",
            tenant="demo",
            model_digest=None,
            reasons=["[link=http://evil]click[/link]"],
            suspicion=0.5,
            input_digest=None,
            instances=np.zeros((1, 64)),
        )
    result = runner.invoke(app, ["review", "show", "1"])
    assert result.exit_code == 0, result.output
    assert "[bold red]mallory[/bold red]" in result.output
    assert "\x1b" not in result.output
    assert "\\x1b[2J" in result.output


def test_resolve_without_note_is_rejected(home: Path) -> None:
    item_id = add_item(home / "review.db")
    result = runner.invoke(app, ["review", "resolve", str(item_id), "--verdict", "benign"])
    assert result.exit_code != 0
    assert "--note" in result.output
    with ReviewQueue(home / "review.db") as q:
        assert q.get(item_id).status == "open"


NAMES = [f"mean radius {n}" for n in range(30)]


def add_tabular_item(db: Path | str, features: list[str] | None = NAMES) -> int:
    with ReviewQueue(db) as q:
        return q.add(
            request_id="req-tab",
            subject="alice",
            tenant="demo",
            model_digest=None,
            reasons=["mahalanobis score 9.1 > 4.0"],
            suspicion=0.9,
            input_digest=None,
            instances=np.arange(30, dtype=np.float64).reshape(1, 30) / 4,
            features=features,
        )


def test_show_tabular_item_prints_a_feature_value_table(home: Path) -> None:
    item_id = add_tabular_item(home / "review.db")
    result = runner.invoke(app, ["review", "show", str(item_id)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "1 row(s) of 30 values" in result.output
    assert "30 names" in result.output
    assert re.search(r"mean radius 29\s*│\s*7\.25", result.output)
    assert "+----" not in result.output  # no heatmap


def test_show_unnamed_rows_prints_an_index_value_table(home: Path) -> None:
    item_id = add_tabular_item(home / "review.db", features=None)
    result = runner.invoke(app, ["review", "show", str(item_id)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert re.search(r"index\s*┃\s*value", result.output)
    assert re.search(r"29\s*│\s*7\.25", result.output)


def _inputs_section(output: str) -> str:
    return output[output.index("instances[0]") :]


def test_show_image_with_layout_1x8x8_draws_the_digits_heatmap(home: Path) -> None:
    legacy_id = add_item(home / "review.db")
    with ReviewQueue(home / "review.db") as q:
        item = q.get(legacy_id)
        fields = {k: getattr(item, k) for k in ("request_id", "subject", "tenant", "reasons")}
        with_layout = q.add(
            **fields,
            model_digest=None,
            suspicion=0.5,
            input_digest=None,
            instances=np.array(item.instances).reshape(1, 1, 8, 8),
            layout=(1, 8, 8),
        )
    legacy = runner.invoke(app, ["review", "show", str(legacy_id)])
    shown = runner.invoke(app, ["review", "show", str(with_layout)])
    assert shown.exit_code == 0, shown.output
    assert _inputs_section(shown.output) == _inputs_section(legacy.output)
    assert "1x8x8 (C x H x W)" in shown.output


def test_show_image_with_layout_3x4x4_draws_the_channel_mean(home: Path) -> None:
    with ReviewQueue(home / "review.db") as q:
        item_id = q.add(
            request_id="req-rgb",
            subject=None,
            tenant=None,
            model_digest=None,
            reasons=["feature squeezing"],
            suspicion=0.5,
            input_digest=None,
            instances=np.ones((2, 48)),
            layout=(3, 4, 4),
        )
    result = runner.invoke(app, ["review", "show", str(item_id)])
    assert result.exit_code == 0, result.output
    assert "instances[1] (mean of 3 channels)" in result.output
    assert "|" + "@" * 8 + "|" in result.output
    assert "2 image(s)" in result.output
