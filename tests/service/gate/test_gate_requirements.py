"""The deploy gate's thresholds: read from the policy's own data, the one place they are set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.gate import GateUnavailableError, load_requirements
from service.toolchain.paths import POLICIES_DIR


def test_requirements_come_from_the_policy_data() -> None:
    data = json.loads((POLICIES_DIR / "data" / "provenance.json").read_text())
    assert load_requirements().to_input() == data["provenance"]["requirements"]


def test_malformed_requirements_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "provenance.json"
    bad.write_text(json.dumps({"provenance": {"requirements": {"epsilon": "small"}}}))
    with pytest.raises(GateUnavailableError, match=str(bad)):
        load_requirements(bad)
