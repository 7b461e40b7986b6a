"""Types and settings shared by the model tests (the fixtures live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from service.model.config import EvalConfig
from service.model.net import DigitsNet

# PGD-20 with one restart and no AutoAttack keeps the tests of PGD short; the defaults (what
# the gate requires) are tested in test_evaluation_strength.py.
TEST_EVAL = EvalConfig(epsilons=(0.1, 0.2), steps=20, restarts=1, autoattack=False)


@dataclass
class Trained:
    """The session's standard and PGD-adversarially trained models."""

    standard: DigitsNet
    adversarial: DigitsNet
