"""The Pulumi project file points the official CLI at the program."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_the_project_names_the_program_directory() -> None:
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    main = REPO / project["main"]
    assert main.resolve() == (REPO / "infra").resolve()
    assert (main / "__main__.py").is_file()
    assert project["runtime"]["name"] == "python"
