"""The pinned Go tools (OPA, Regal): found by the version they report, installed once."""

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from service.toolchain.errors import ToolMissingError
from service.toolchain.gotool import GoTool
from service.toolchain.install import main as install_main
from service.toolchain.opa import OPA, install_opa
from service.toolchain.regal import REGAL, install_regal

TOOLS = [(OPA, install_opa), (REGAL, install_regal)]
IDS = [tool.name for tool, _ in TOOLS]


@pytest.mark.parametrize(("tool", "install"), TOOLS, ids=IDS)
def test_pinned_tool_is_found_and_reports_its_version(
    tool: GoTool, install: Callable[[], Path]
) -> None:
    assert tool.reported_version(tool.find()) == tool.version


@pytest.mark.parametrize(("tool", "install"), TOOLS, ids=IDS)
def test_installing_twice_reuses_the_existing_binary(
    tool: GoTool, install: Callable[[], Path]
) -> None:
    first = install()
    mtime = first.stat().st_mtime_ns
    second = install()
    assert second == first
    assert second.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(("tool", "install"), TOOLS, ids=IDS)
def test_a_binary_of_another_version_is_not_accepted(
    tool: GoTool, install: Callable[[], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = tmp_path / tool.name
    impostor.write_text("#!/bin/sh\necho 'Version: 0.0.7'\n")
    impostor.chmod(impostor.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(tool.env_var, str(impostor))
    monkeypatch.setenv("ZTML_TOOLS", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(ToolMissingError, match=r"0\.0\.7") as excinfo:
        tool.find()
    assert tool.install_hint in str(excinfo.value)


@pytest.mark.parametrize(("tool", "install"), TOOLS, ids=IDS)
def test_install_without_go_explains_how_to_get_the_tool(
    tool: GoTool,
    install: Callable[[], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(tool.env_var, raising=False)
    monkeypatch.setenv("ZTML_TOOLS", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert install_main([tool.name]) == 1
    err = capsys.readouterr().err
    assert "Go is not installed" in err
    assert tool.env_var in err
