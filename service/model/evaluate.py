"""Measure clean and robust accuracy on the test split.

Robust entries follow the ``metrics.json`` format (``attack``, ``norm``, ``epsilon``, ``steps``,
``restarts``, ``accuracy``). Attack names:

- ``fgsm``: one signed-gradient step of size eps on cross-entropy;
- ``pgd-ce``: PGD with random restarts on cross-entropy (what gradient masking can defeat);
- ``pgd-cw``: PGD with random restarts on the Carlini-Wagner logit margin;
- ``pgd``: per example, the worst case of ``pgd-ce`` and ``pgd-cw`` -- an example counts
  as robust only if both attacks fail;
- ``autoattack``: the standard AutoAttack ensemble of ``torchattacks`` (APGD-CE, APGD-T,
  FAB-T with 100 iterations and one restart each, Square with 5000 queries);
- ``worst-case``: per example, the worst case of ``pgd`` and ``autoattack`` -- an example
  counts as robust only if every attack fails. Its ``steps`` and ``restarts`` are PGD's.
  This is the number the deploy gate and the reports rely on.

``autoattack`` and ``worst-case`` are left out when :attr:`EvalConfig.autoattack` is off
(the ``tiny`` profile), and the gate refuses such an evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from service.model.attacks import (
    AUTOATTACK_RESTARTS,
    AUTOATTACK_STEPS,
    LossName,
    autoattack,
    fgsm,
    pgd,
)
from service.model.config import EvalConfig
from service.model.data import DATASET_NAME, load_splits
from service.model.metrics import GATE_ATTACK, evaluation_document, robust_entry

TEST_DATASET = f"{DATASET_NAME}/test"
ATTACKS = ("fgsm", "pgd-ce", "pgd-cw", "pgd", "autoattack", GATE_ATTACK)

# Called as progress(done, total) after each (attack, epsilon) pair.
EvalProgressFn = Callable[[int, int], None]


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def _seed(config: EvalConfig, eps: float) -> int:
    return config.seed + round(eps * 1000)


def _pgd_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    config: EvalConfig,
    loss: LossName,
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_seed(config, eps))
    x_adv = pgd(
        model,
        x,
        y,
        eps=eps,
        steps=config.steps,
        restarts=config.restarts,
        loss=loss,
        generator=gen,
    )
    return _correct(model, x_adv, y)


def evaluate_model(
    model: nn.Module,
    config: EvalConfig | None = None,
    *,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    progress: EvalProgressFn | None = None,
) -> dict[str, Any]:
    """Evaluate a model's clean accuracy and its accuracy under FGSM, PGD and AutoAttack.

    Args:
        model: The classifier.
        config: Epsilons, PGD steps and restarts, whether AutoAttack runs; defaults to
            :class:`EvalConfig`.
        x: Inputs; defaults to the test split.
        y: Labels; defaults to the test split.
        progress: Optional callback ``progress(done, total)``.

    Returns:
        The ``evaluation`` object of ``metrics.json``.
    """
    config = config or EvalConfig()
    if x is None or y is None:
        splits = load_splits()
        x = torch.from_numpy(splits.x_test.copy())
        y = torch.from_numpy(splits.y_test.copy())
    model.eval()
    clean = _correct(model, x, y)
    robust: list[dict[str, Any]] = []
    total = 3 * len(config.epsilons)
    done = 0

    def entry(attack: str, eps: float, steps: int, restarts: int, ok: torch.Tensor) -> None:
        accuracy = round(float(ok.float().mean()), 6)
        robust.append(
            robust_entry(
                attack=attack, epsilon=eps, steps=steps, restarts=restarts, accuracy=accuracy
            )
        )

    for eps in config.epsilons:
        ok_fgsm = _correct(model, fgsm(model, x, y, eps=eps), y) & clean
        ok_ce = _pgd_correct(model, x, y, eps=eps, config=config, loss="ce") & clean
        ok_cw = _pgd_correct(model, x, y, eps=eps, config=config, loss="cw") & clean
        entry("fgsm", eps, 1, 1, ok_fgsm)
        entry("pgd-ce", eps, config.steps, config.restarts, ok_ce)
        entry("pgd-cw", eps, config.steps, config.restarts, ok_cw)
        ok_pgd = ok_ce & ok_cw
        entry("pgd", eps, config.steps, config.restarts, ok_pgd)
        if config.autoattack:
            x_aa = autoattack(model, x, y, eps=eps, seed=_seed(config, eps))
            ok_aa = _correct(model, x_aa, y) & clean
            entry("autoattack", eps, AUTOATTACK_STEPS, AUTOATTACK_RESTARTS, ok_aa)
            entry(GATE_ATTACK, eps, config.steps, config.restarts, ok_pgd & ok_aa)
        done += 3
        if progress is not None:
            progress(done, total)
    return evaluation_document(
        dataset=TEST_DATASET, clean_accuracy=round(float(clean.float().mean()), 6), robust=robust
    )
