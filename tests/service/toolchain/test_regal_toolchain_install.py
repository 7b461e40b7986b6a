import stat
from pathlib import Path

import pytest

from service.toolchain.errors import ToolMissingError
from service.toolchain.install import main as install_main
from service.toolchain.regal import REGAL, REGAL_VERSION, find_regal, install_regal


def test_pinned_regal_is_found_and_reports_its_version():
    path = find_regal()
    assert REGAL.reported_version(path) == REGAL_VERSION


def test_installing_regal_twice_reuses_the_existing_binary():
    first = install_regal()
    mtime = first.stat().st_mtime_ns
    second = install_regal()
    assert second == first
    assert second.stat().st_mtime_ns == mtime


def test_a_regal_of_another_version_is_not_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    impostor = tmp_path / "regal"
    impostor.write_text("#!/bin/sh\necho 'Version:    v0.20.0'\n")
    impostor.chmod(impostor.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("ZTML_REGAL", str(impostor))
    monkeypatch.setenv("ZTML_TOOLS", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(ToolMissingError, match=r"v0\.20\.0") as excinfo:
        find_regal()
    assert "scripts/run setup" in str(excinfo.value)


def test_regal_install_without_go_explains_how_to_get_regal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.delenv("ZTML_REGAL", raising=False)
    monkeypatch.setenv("ZTML_TOOLS", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert install_main(["regal"]) == 1
    err = capsys.readouterr().err
    assert "Go is not installed" in err
    assert "ZTML_REGAL" in err
