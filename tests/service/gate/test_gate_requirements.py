"""The deploy gate's thresholds: read from the policy's own data, the one place they are set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest

from service.gate import GateUnavailableError, load_requirements
from service.gate.requirements import MODALITIES
from service.model.contract import Modality
from service.toolchain.paths import POLICIES_DIR


def test_requirements_come_from_the_policy_data() -> None:
    data = json.loads((POLICIES_DIR / "data" / "provenance.json").read_text())
    assert load_requirements().to_input() == data["provenance"]["requirements"]


def test_malformed_requirements_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "provenance.json"
    bad.write_text(json.dumps({"provenance": {"requirements": {"epsilon": "small"}}}))
    with pytest.raises(GateUnavailableError, match=str(bad)):
        load_requirements(bad)


def _file(tmp_path: Path, by_modality: Any) -> Path:
    path = tmp_path / "provenance.json"
    defaults = {"min_robust_accuracy": 0.8, "epsilon": 0.1, "attack": "worst-case"}
    requirements = {**defaults, "min_steps": 100, "min_restarts": 10, "by_modality": by_modality}
    path.write_text(json.dumps({"provenance": {"requirements": requirements}}))
    return path


def test_the_gate_knows_every_contract_modality() -> None:
    assert get_args(Modality) == MODALITIES


def test_a_modality_overrides_only_the_fields_it_names(tmp_path: Path) -> None:
    loaded = load_requirements(_file(tmp_path, {"tabular": {"epsilon": 0.05}}))
    tabular = loaded.for_modality("tabular")
    assert (tabular.epsilon, tabular.min_robust_accuracy, tabular.min_steps) == (0.05, 0.8, 100)
    assert loaded.for_modality("image").epsilon == 0.1
    assert loaded.to_input()["by_modality"] == {"tabular": {"epsilon": 0.05}}


def test_requirements_without_by_modality_hold_every_modality_to_the_defaults(
    tmp_path: Path,
) -> None:
    path = tmp_path / "provenance.json"
    old = {"min_robust_accuracy": 0.8, "epsilon": 0.1, "attack": "worst-case"}
    requirements = {**old, "min_steps": 100, "min_restarts": 10}
    path.write_text(json.dumps({"provenance": {"requirements": requirements}}))
    loaded = load_requirements(path)
    assert loaded.for_modality("tabular") == loaded.for_modality("image")
    assert loaded.to_input()["by_modality"] == {}


@pytest.mark.parametrize(
    "by_modality",
    [
        ["tabular"],
        {"audio": {"epsilon": 0.05}},
        {"tabular": 0.05},
        {"tabular": {"epsilonn": 0.05}},
        {"tabular": {"epsilon": "small"}},
    ],
    ids=["not-an-object", "unknown-modality", "not-an-override", "unknown-field", "bad-value"],
)
def test_malformed_modality_requirements_are_named(tmp_path: Path, by_modality: Any) -> None:
    path = _file(tmp_path, by_modality)
    with pytest.raises(GateUnavailableError, match=str(path)):
        load_requirements(path)
