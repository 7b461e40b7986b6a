import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.main import app
from service.toolchain.opa import find_opa

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "doctor" in result.output
    assert "version" in result.output


def test_version_prints_ztml_and_pinned_opa():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.startswith("ztml 0.")
    assert "opa 1." in result.output


@pytest.fixture
def isolated_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with only the basics: no pulumi, kubectl or k3d; OPA through ZTML_OPA."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("go", "docker", "initdb"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_doctor_reports_pulumi_and_cluster_as_optional_and_missing(
    isolated_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ZTML_OPA", str(find_opa()))
    monkeypatch.setenv("COLUMNS", "250")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    for name in ("pulumi CLI", "kubernetes cluster", "k3d", "kubectl"):
        assert "optional" in lines[name] and "missing" in lines[name], lines[name]
    assert "pulumi.com" in lines["pulumi CLI"]
    assert "k3d cluster create" in lines["kubernetes cluster"]
    for name in ("python", "opa", "torch", "bentoml", "cryptography"):
        assert "required" in lines[name] and " ok " in lines[name], lines[name]
    assert "Everything required is present" in result.output


def test_doctor_fails_when_opa_is_missing_and_says_how_to_get_it(
    isolated_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("ZTML_OPA", raising=False)
    monkeypatch.setenv("ZTML_TOOLS", str(tmp_path / "no-tools"))
    monkeypatch.setenv("COLUMNS", "250")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "Missing required: opa" in result.output
    assert "go install github.com/open-policy-agent/opa@v" in result.output
