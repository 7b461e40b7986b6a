"""FGSM/PGD/AutoAttack strength and adversarial training's effect, on the session's models."""

from __future__ import annotations

import pytest
import torch

from service.model.attacks import autoattack, fgsm, pgd
from service.model.evaluate import evaluate_model
from service.model.metrics import robust_accuracy
from service.model.train import train
from tests.service.model.trained_models import TEST_EVAL, Trained

pytestmark = pytest.mark.slow


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_pgd_at_eps_02_cuts_standard_accuracy_by_over_50_points(
    trained: Trained, test_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = test_data
    clean = _accuracy(trained.standard, x, y)
    gen = torch.Generator().manual_seed(0)
    x_adv = pgd(trained.standard, x, y, eps=0.2, steps=20, restarts=1, generator=gen)
    assert clean >= 0.97
    assert clean - _accuracy(trained.standard, x_adv, y) > 0.50


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.2])
def test_pgd_is_at_least_as_strong_as_fgsm(
    trained: Trained, test_data: tuple[torch.Tensor, torch.Tensor], eps: float
) -> None:
    x, y = test_data
    for model in (trained.standard, trained.adversarial):
        gen = torch.Generator().manual_seed(1)
        acc_pgd = _accuracy(model, pgd(model, x, y, eps=eps, steps=20, generator=gen), y)
        acc_fgsm = _accuracy(model, fgsm(model, x, y, eps=eps), y)
        assert acc_pgd <= acc_fgsm


def test_adversarial_examples_stay_in_the_eps_ball_and_pixel_range(
    trained: Trained, test_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = test_data
    gen = torch.Generator().manual_seed(2)
    for x_adv in (
        pgd(trained.standard, x, y, eps=0.1, steps=10, restarts=2, generator=gen),
        fgsm(trained.standard, x, y, eps=0.1),
    ):
        assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
        assert float(x_adv.min()) >= 0.0
        assert float(x_adv.max()) <= 1.0


def test_autoattack_stays_in_the_eps_ball_and_beats_fgsm(
    trained: Trained, test_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = (t[:120] for t in test_data)
    model = trained.standard
    x_adv = autoattack(model, x, y, eps=0.1, seed=3)
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert _accuracy(model, x_adv, y) <= _accuracy(model, fgsm(model, x, y, eps=0.1), y)


def test_more_restarts_never_weaken_pgd(
    trained: Trained, test_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = test_data
    model = trained.adversarial
    one = pgd(
        model, x, y, eps=0.2, steps=10, restarts=1, generator=torch.Generator().manual_seed(3)
    )
    three = pgd(
        model, x, y, eps=0.2, steps=10, restarts=3, generator=torch.Generator().manual_seed(3)
    )
    assert _accuracy(model, three, y) <= _accuracy(model, one, y)


def test_adversarial_training_raises_robust_accuracy_at_eps_01_by_over_30_points(
    trained: Trained,
) -> None:
    std = evaluate_model(trained.standard, TEST_EVAL)
    adv = evaluate_model(trained.adversarial, TEST_EVAL)
    std_rob = robust_accuracy(std, attack="pgd", epsilon=0.1)
    adv_rob = robust_accuracy(adv, attack="pgd", epsilon=0.1)
    assert std_rob is not None
    assert adv_rob is not None
    assert adv_rob - std_rob > 0.30


def test_fast_pgd_profile_meets_clean_and_robust_targets(trained: Trained) -> None:
    evaluation = evaluate_model(trained.adversarial, TEST_EVAL)
    robust = robust_accuracy(evaluation, attack="pgd", epsilon=0.1)
    assert evaluation["clean_accuracy"] >= 0.95
    assert robust is not None
    assert robust >= 0.80


def test_logit_margin_attack_exposes_distillation_gradient_masking() -> None:
    distilled = train("distill", "tiny", epochs=10, teacher_epochs=10).model
    evaluation = evaluate_model(distilled, TEST_EVAL)
    ce = robust_accuracy(evaluation, attack="pgd-ce", epsilon=0.2)
    cw = robust_accuracy(evaluation, attack="pgd-cw", epsilon=0.2)
    worst = robust_accuracy(evaluation, attack="pgd", epsilon=0.2)
    assert ce is not None
    assert cw is not None
    assert ce - cw > 0.30  # cross-entropy PGD is fooled by saturated softmax
    assert worst == pytest.approx(min(ce, cw), abs=1e-6) or worst <= min(ce, cw)
