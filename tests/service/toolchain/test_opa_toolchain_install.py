import stat
from pathlib import Path

import pytest

from service.toolchain.errors import ToolMissingError
from service.toolchain.install import main as install_main
from service.toolchain.opa import OPA_VERSION, find_opa, install_opa, opa_version


def test_pinned_opa_is_found_and_reports_its_version():
    path = find_opa()
    assert opa_version(path) == OPA_VERSION


def test_installing_twice_reuses_the_existing_binary():
    first = install_opa()
    mtime = first.stat().st_mtime_ns
    second = install_opa()
    assert second == first
    assert second.stat().st_mtime_ns == mtime


def test_an_opa_of_another_version_is_not_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    impostor = tmp_path / "opa"
    impostor.write_text("#!/bin/sh\necho 'Version: 0.61.0'\n")
    impostor.chmod(impostor.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("ZTML_OPA", str(impostor))
    monkeypatch.setenv("ZTML_TOOLS", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(ToolMissingError, match=r"0\.61\.0") as excinfo:
        find_opa()
    assert "go install" in str(excinfo.value)


def test_install_without_go_explains_how_to_get_opa(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.delenv("ZTML_OPA", raising=False)
    monkeypatch.setenv("ZTML_TOOLS", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert install_main(["opa"]) == 1
    err = capsys.readouterr().err
    assert "Go is not installed" in err
    assert "ZTML_OPA" in err
