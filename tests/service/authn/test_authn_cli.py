"""``ztml token issue|inspect`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.main import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    return tmp_path


def issue(*extra: str) -> str:
    result = runner.invoke(
        app,
        [
            "token",
            "issue",
            "--sub",
            "alice",
            "--roles",
            "predictor,analyst",
            "--tenant",
            "demo",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_issue_prints_only_the_token(home: Path) -> None:
    out = issue("--ttl", "600")
    assert out.count("\n") == 1
    assert out.strip().count(".") == 2


def test_issued_token_inspects_with_default_scopes_from_roles(home: Path) -> None:
    token = issue().strip()
    result = runner.invoke(app, ["token", "inspect", token])
    assert result.exit_code == 0, result.output
    claims = json.loads(result.stdout)
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["predictor", "analyst"]
    assert set(claims["scopes"]) == {"predict", "explain", "metadata"}


def test_explicit_scopes_are_used(home: Path) -> None:
    token = issue("--scopes", "predict").strip()
    result = runner.invoke(app, ["token", "inspect", f"Bearer {token}"])
    assert json.loads(result.stdout)["scopes"] == ["predict"]


def test_inspect_reports_the_rejection_reason(home: Path) -> None:
    token = issue().strip()
    head, body, sig = token.split(".")
    result = runner.invoke(app, ["token", "inspect", f"{head}.{body}.{sig[:-4]}AAAA"])
    assert result.exit_code == 1
    assert "token rejected: bad signature" in result.stderr
    assert sig not in result.stderr


def test_inspect_with_untrusted_key_names_unknown_key(home: Path, tmp_path: Path) -> None:
    from service.keys.store import init_keys

    issue()
    init_keys(tmp_path / "other", ["rogue"])
    rogue = str(tmp_path / "other" / "rogue.key")
    result = runner.invoke(
        app,
        ["token", "issue", "--sub", "eve", "--roles", "admin", "--tenant", "demo", "--key", rogue],
    )
    assert result.exit_code == 0
    assert "not trusted" in result.stderr
    token = result.stdout.strip()
    inspected = runner.invoke(app, ["token", "inspect", token])
    assert inspected.exit_code == 1
    assert "unknown key id" in inspected.stderr


def test_unknown_roles_without_scopes_fail_with_the_fix(home: Path) -> None:
    result = runner.invoke(
        app, ["token", "issue", "--sub", "a", "--roles", "nobody", "--tenant", "demo"]
    )
    assert result.exit_code == 1
    assert "pass --scopes" in result.stderr
    assert result.stdout == ""


def test_missing_key_file_fails_without_traceback(home: Path) -> None:
    nope = str(home / "nope.key")
    result = runner.invoke(
        app,
        ["token", "issue", "--sub", "a", "--roles", "predictor", "--tenant", "demo", "--key", nope],
    )
    assert result.exit_code == 1
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.output


def test_inspect_without_trust_file_names_the_fix(home: Path) -> None:
    result = runner.invoke(app, ["token", "inspect", "a.b.c"])
    assert result.exit_code == 1
    assert "issuers.json" in result.stderr
