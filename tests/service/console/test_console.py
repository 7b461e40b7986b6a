"""The terminal helpers every ``ztml`` command shares: one failure line, a quiet progress bar."""

from __future__ import annotations

import pytest
import typer

from service.console import err_console, fail, work_progress


def test_fail_prints_one_plain_error_line_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    exit_ = fail("ledger [bold]/tmp/x.db[/bold] is missing: run `ztml ledger init`")
    assert isinstance(exit_, typer.Exit) and exit_.exit_code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "error: ledger [bold]/tmp/x.db[/bold] is missing: run `ztml ledger init`\n"
    )


def test_disabled_progress_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with work_progress("hashing", unit="bytes", disable=True) as progress:
        task = progress.add_task("hashing", total=10)
        progress.advance(task, 10)
    assert capsys.readouterr() == ("", "")


def test_progress_draws_on_the_error_console() -> None:
    assert work_progress("verifying").console is err_console
