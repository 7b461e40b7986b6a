"""Types and settings shared by the model tests (the fixtures live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from service.model.config import EvalConfig
from service.model.net import DigitsNet

# PGD-20 with one restart keeps the tests short; the benchmark uses more restarts.
TEST_EVAL = EvalConfig(epsilons=(0.1, 0.2), steps=20, restarts=1)


@dataclass
class Trained:
    """The session's standard and PGD-adversarially trained models."""

    standard: DigitsNet
    adversarial: DigitsNet
