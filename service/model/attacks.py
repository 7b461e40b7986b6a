"""White-box L-inf attacks in torch: FGSM and PGD with random restarts.

PGD keeps, for every example, the worst case over all restarts and all iterates: an
example counts as robust only if no iterate of any restart changed its prediction. Two
losses are available: cross-entropy (``"ce"``), the usual choice, and the Carlini-Wagner
logit margin (``"cw"``: best other logit minus true logit), which works on the logits
and is therefore not fooled by saturated softmax outputs (gradient masking, as in a
defensively distilled network deployed at temperature 1).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LossName = Literal["ce", "cw"]
PIXEL_MIN = 0.0
PIXEL_MAX = 1.0


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: LossName) -> torch.Tensor:
    """Return the per-example loss an untargeted attacker maximises.

    Args:
        logits: Model outputs, shape (N, C).
        y: True labels, shape (N,).
        loss: ``"ce"`` for cross-entropy, ``"cw"`` for the logit margin
            ``max_{j != y} z_j - z_y``.

    Returns:
        Loss per example, shape (N,).
    """
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.max(dim=1).values - true_logit


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), PIXEL_MIN, PIXEL_MAX)


def _input_grad(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss: LossName
) -> tuple[torch.Tensor, torch.Tensor]:
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    (grad,) = torch.autograd.grad(attack_loss(logits, y, loss).sum(), x_adv)
    return grad, logits.detach()


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, loss: LossName = "ce"
) -> torch.Tensor:
    """Fast gradient sign method: one step of size ``eps`` along the loss gradient's sign.

    Args:
        model: The classifier (put in eval mode by the caller).
        x: Clean inputs (N, 64) in [0, 1].
        y: True labels (N,).
        eps: L-inf radius.
        loss: Attack loss, see :func:`attack_loss`.

    Returns:
        Adversarial inputs, clipped to the eps-ball and to [0, 1].
    """
    grad, _ = _input_grad(model, x, y, loss)
    return _project(x + eps * grad.sign(), x, eps).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    alpha: float | None = None,
    restarts: int = 1,
    loss: LossName = "ce",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) under an L-inf budget.

    Each restart starts at a uniform random point of the eps-ball (unless
    ``random_start`` is False) and takes ``steps`` signed-gradient steps of size ``alpha``,
    projecting back to the ball and to [0, 1] after each. Per example, the returned input
    is the first iterate of any restart that the model misclassifies or, when none does,
    the final iterate with the highest loss.

    Args:
        model: The classifier (put in eval mode by the caller).
        x: Clean inputs (N, 64) in [0, 1].
        y: True labels (N,).
        eps: L-inf radius.
        steps: Gradient steps per restart.
        alpha: Step size; defaults to ``2.5 * eps / steps``.
        restarts: Number of random restarts (at least 1).
        loss: Attack loss, see :func:`attack_loss`.
        random_start: Start each restart at a random point of the ball.
        generator: Random generator for the starting points (determinism).

    Returns:
        The worst-case adversarial inputs, shape of ``x``.

    Raises:
        ValueError: If eps, steps or restarts are out of range.
    """
    if eps < 0 or steps < 1 or restarts < 1:
        raise ValueError(
            f"need eps >= 0, steps >= 1, restarts >= 1; got {eps}, {steps}, {restarts}"
        )
    step = alpha if alpha is not None else 2.5 * eps / steps
    x = x.detach()
    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"))
    fooled = torch.zeros(x.shape[0], dtype=torch.bool)
    for _ in range(restarts):
        x_adv = x.clone()
        if random_start:
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
            x_adv = _project(x + eps * noise, x, eps)
        for _ in range(steps):
            grad, logits = _input_grad(model, x_adv, y, loss)
            newly = (logits.argmax(1) != y) & ~fooled
            best[newly] = x_adv[newly]
            fooled |= newly
            x_adv = _project(x_adv + step * grad.sign(), x, eps).detach()
        with torch.no_grad():
            logits = model(x_adv)
            final_loss = attack_loss(logits, y, loss)
        newly = (logits.argmax(1) != y) & ~fooled
        better = ~fooled & ~newly & (final_loss > best_loss)
        replace = newly | better
        best[replace] = x_adv[replace]
        best_loss = torch.where(better, final_loss, best_loss)
        fooled |= newly
    return best.detach()


def pgd_final_iterate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One random-start PGD run on cross-entropy, returning its last iterate.

    This is the example generator of adversarial training: unlike :func:`pgd` it does not
    stop at the first misclassified iterate, so training sees high-loss points.

    Args:
        model: The network.
        x: Clean inputs.
        y: True labels.
        eps: L-inf radius.
        steps: Gradient steps (step size ``2.5 * eps / steps``).
        generator: Random generator for the starting point.

    Returns:
        The final adversarial inputs.
    """
    step = 2.5 * eps / steps
    x = x.detach()
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
    x_adv = _project(x + eps * noise, x, eps)
    for _ in range(steps):
        grad, _ = _input_grad(model, x_adv, y, "ce")
        x_adv = _project(x_adv + step * grad.sign(), x, eps).detach()
    return x_adv
