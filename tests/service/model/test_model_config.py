"""Evaluation presets against the deploy gate: fast and full meet it, tiny never does."""

from __future__ import annotations

import pytest

from service.gate import load_requirements
from service.model.config import DEFENSES, EvalConfig, config_for
from service.model.metrics import GATE_ATTACK


@pytest.mark.parametrize("profile", ["fast", "full"])
@pytest.mark.parametrize("defense", DEFENSES)
def test_profiles_the_gate_reads_meet_its_steps_and_restarts(defense: str, profile: str) -> None:
    evaluation = config_for(defense, profile).eval
    required = load_requirements()
    assert required.attack == GATE_ATTACK
    assert evaluation.autoattack
    assert evaluation.steps >= required.min_steps
    assert evaluation.restarts >= required.min_restarts
    assert required.epsilon in evaluation.epsilons


@pytest.mark.parametrize("defense", DEFENSES)
def test_tiny_profile_evaluation_cannot_satisfy_the_gate(defense: str) -> None:
    evaluation = config_for(defense, "tiny").eval
    required = load_requirements()
    assert not evaluation.autoattack  # so it records no worst-case entry at all
    assert evaluation.steps < required.min_steps
    assert evaluation.restarts < required.min_restarts


def test_default_evaluation_is_pgd_100_steps_10_restarts_with_autoattack() -> None:
    assert (EvalConfig().steps, EvalConfig().restarts, EvalConfig().autoattack) == (100, 10, True)
