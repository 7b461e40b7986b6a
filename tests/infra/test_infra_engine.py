"""The program under the real Pulumi engine (Automation API, inline program, file backend).

Each run is a separate process (``python -m infra.automation``), so the engine never meets
the mocks the rest of ``tests/infra`` installs. These runs refuse before any resource is
declared, so they need no cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow]


def _engine(
    tmp_path: Path, config: dict[str, Any], action: str = "preview"
) -> subprocess.CompletedProcess[str]:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.automation",
            action,
            "--stack",
            "engine-check",
            "--backend",
            str(tmp_path / "backend"),
            "--config",
            str(config_file),
        ],
        env={**os.environ, "PULUMI_CONFIG_PASSPHRASE": "engine-check-passphrase"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize(
    ("which", "reason", "action"),
    [
        ("revoked", "revoked", "preview"),
        ("unapproved", "approv", "preview"),
        ("unregistered", "no register record", "preview"),
        ("revoked", "revoked", "up"),
        ("unapproved", "approv", "up"),
        ("unregistered", "no register record", "up"),
    ],
)
def test_a_refused_model_fails_with_every_reason_and_no_traceback(
    raw_values: dict[str, str],
    digests: Any,
    tmp_path: Path,
    which: str,
    reason: str,
    action: str,
) -> None:
    digest = getattr(digests, which)
    # The Automation API's inline runtime reports a RunError twice (logged, then as the
    # run's error); either way it is the gate's text alone, never a Python traceback.
    proc = _engine(tmp_path, {**raw_values, "ztml:modelDigest": digest}, action)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    said = proc.stderr
    assert f"Deploy gate refused model {digest}" in said
    assert reason in said
    assert "Traceback" not in said
    assert "runtime error" not in said
    assert "unhandled exception" not in said
    assert "kubernetes:" not in said  # refused before any resource was declared


def test_a_bad_config_value_fails_preview_naming_the_key(
    raw_values: dict[str, str], tmp_path: Path
) -> None:
    proc = _engine(tmp_path, {**raw_values, "ztml:replicas": "many"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ztml:replicas" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_refused_extra_model_fails_preview_naming_it_with_every_reason(
    raw_values: dict[str, str], digests: Any, extra_models: dict[str, str], tmp_path: Path
) -> None:
    models = [
        {"name": "digits-cnn", "digest": extra_models["digits-cnn"]},
        {"name": "breast-cancer", "digest": digests.revoked},
    ]
    proc = _engine(tmp_path, {**raw_values, "ztml:models": json.dumps(models)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    said = proc.stderr
    assert f"model 'breast-cancer' (ztml:models): Deploy gate refused model {digests.revoked}" in (
        said
    )
    assert "revoked" in said
    assert "model 'digits-cnn'" not in said
    assert "Traceback" not in said
    assert "kubernetes:" not in said  # refused before any resource was declared


def test_a_bad_models_entry_fails_preview_naming_the_key(
    raw_values: dict[str, str], tmp_path: Path
) -> None:
    models = [{"name": "ztml-model", "digest": "sha256:" + "6" * 64}]
    proc = _engine(tmp_path, {**raw_values, "ztml:models": json.dumps(models)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ztml:models[0].name" in proc.stderr
    assert "Traceback" not in proc.stderr
