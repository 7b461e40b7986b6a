"""Training settings and determinism."""

from __future__ import annotations

import pytest
import torch

from service.model.config import config_for
from service.model.data import load_splits, training_data_digest
from service.model.errors import TrainingError
from service.model.train import train


def test_training_is_deterministic() -> None:
    first = train("pgd", "tiny", epochs=2, hidden=(32,)).model.state_dict()
    second = train("pgd", "tiny", epochs=2, hidden=(32,)).model.state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_splits_are_stratified_scaled_and_stable() -> None:
    splits = load_splits()
    assert splits.x_train.shape == (1078, 64)
    assert (len(splits.x_val), len(splits.x_test)) == (359, 360)
    assert float(splits.x_train.min()) >= 0.0
    assert float(splits.x_train.max()) <= 1.0
    assert set(splits.y_test.tolist()) == set(range(10))
    assert training_data_digest() == training_data_digest(splits)


@pytest.mark.parametrize(("defense", "profile"), [("magic", "fast"), ("pgd", "huge")])
def test_unknown_defense_or_profile_is_refused(defense: str, profile: str) -> None:
    with pytest.raises(TrainingError, match="choose one of"):
        config_for(defense, profile)


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(TrainingError, match="invalid training setting"):
        config_for("pgd", "fast", learning_rate=1.0)


def test_distillation_uses_a_temperature_above_one() -> None:
    config = config_for("distill", "full")
    assert config.temperature > 1
    assert config.teacher_epochs > 0
