"""The program also runs as a preview (dry run), and runs as Pulumi runs it (runpy)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra.config import StackConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("preview_mode")
def test_program_runs_as_a_preview(
    make_config: Callable[..., StackConfig], program_runner: Callable[[StackConfig], Any]
) -> None:
    assert pulumi.runtime.is_dry_run()
    run = program_runner(make_config())
    assert run.of_kind("Deployment"), "the preview declared no Deployment"


def test_program_directory_does_not_shadow_the_standard_library() -> None:
    probe = (
        "import runpy, sys\n"
        "sys.path.insert(0, 'infra')\n"  # what runpy.run_path('infra/') does for pulumi
        "import infra.__main__\n"
        "import secrets, json\n"
        "assert 'infra' not in secrets.__file__, secrets.__file__\n"
        "assert hasattr(secrets, 'token_hex')\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
