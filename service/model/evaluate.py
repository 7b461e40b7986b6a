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

Any model is evaluated the same way in unit space (:func:`evaluate_served`): its unit
network maps ``u = (x - min) / (max - min)`` in ``[0, 1]^d`` to logits, so an epsilon is a
fraction of each feature's declared range and attacks clamp to ``[0, 1]`` -- for the
built-in digits model (bounds 0..1) unit space is pixel space and nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from service.model.package import ServedModel

TEST_DATASET = f"{DATASET_NAME}/test"
ATTACKS = ("fgsm", "pgd-ce", "pgd-cw", "pgd", "autoattack", GATE_ATTACK)

# Called as progress(done, total) after each (attack, epsilon) pair.
EvalProgressFn = Callable[[int, int], None]


#: AutoAttack's targeted DLR loss reads the 4th-largest logit.
AUTOATTACK_MIN_CLASSES = 4


class _PaddedLogits(nn.Module):
    """Append dummy logits (below every real one) so AutoAttack runs on < 4 classes.

    A dummy logit is the smallest real logit minus one: it never wins the argmax and
    barely changes cross-entropy, and AutoAttack's DLR losses stay defined. Accuracy is
    always measured on the unpadded model, so the padding can only change how strong the
    attack is, never what is counted as robust.
    """

    def __init__(self, model: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.model = model
        self.extra = AUTOATTACK_MIN_CLASSES - n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the model's logits followed by the dummy ones."""
        logits = self.model(x)
        low = logits.min(dim=1, keepdim=True).values - 1.0
        return torch.cat([logits, low.expand(-1, self.extra)], dim=1)


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
    dataset: str = TEST_DATASET,
    image_shape: tuple[int, ...] = (1, 8, 8),
    n_classes: int = 10,
) -> dict[str, Any]:
    """Evaluate a model's clean accuracy and its accuracy under FGSM, PGD and AutoAttack.

    Args:
        model: The classifier on inputs ``(N, d)`` in ``[0, 1]``.
        config: Epsilons, PGD steps and restarts, whether AutoAttack runs; defaults to
            :class:`EvalConfig`.
        x: Inputs; defaults to the digits test split.
        y: Labels; defaults to the digits test split.
        progress: Optional callback ``progress(done, total)``.
        dataset: The name recorded as the evaluation's ``dataset``.
        image_shape: How AutoAttack (which expects images) is shown one input; its
            product must be ``d``.
        n_classes: The number of classes (AutoAttack's targets).

    Returns:
        The ``evaluation`` object of ``metrics.json``.
    """
    config = config or EvalConfig()
    attacked = model
    if n_classes < AUTOATTACK_MIN_CLASSES:
        attacked = _PaddedLogits(model, n_classes).eval()
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
            x_aa = autoattack(
                attacked,
                x,
                y,
                eps=eps,
                seed=_seed(config, eps),
                image_shape=image_shape,
                n_classes=max(n_classes, AUTOATTACK_MIN_CLASSES),
            )
            ok_aa = _correct(model, x_aa, y) & clean
            entry("autoattack", eps, AUTOATTACK_STEPS, AUTOATTACK_RESTARTS, ok_aa)
            entry(GATE_ATTACK, eps, config.steps, config.restarts, ok_pgd & ok_aa)
        done += 3
        if progress is not None:
            progress(done, total)
    return evaluation_document(
        dataset=dataset, clean_accuracy=round(float(clean.float().mean()), 6), robust=robust
    )


def evaluate_served(
    served: ServedModel,
    config: EvalConfig | None = None,
    *,
    progress: EvalProgressFn | None = None,
) -> dict[str, Any]:
    """Evaluate any model on its own test data, in unit space (see the module docstring).

    Args:
        served: The opened model (:func:`service.model.package.open_model`).
        config: As for :func:`evaluate_model`.
        progress: Optional callback ``progress(done, total)``.

    Returns:
        The evaluation document; its dataset is ``<contract name>/test``
        (``sklearn-digits/test`` for the built-in digits model).

    Raises:
        PackageError: If the package's test data does not fit its contract.
    """
    contract = served.contract
    x_raw, y = served.test()
    x = torch.from_numpy(served.to_unit(x_raw)).clamp_(0.0, 1.0)
    layout = contract.image_layout or (1, 1, contract.n_features)
    return evaluate_model(
        served.unit_network,
        config,
        x=x,
        y=torch.from_numpy(y),
        progress=progress,
        dataset=TEST_DATASET if served.builtin else f"{contract.name}/test",
        image_shape=layout,
        n_classes=contract.n_classes,
    )
