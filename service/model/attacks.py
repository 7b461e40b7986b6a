"""L-inf attacks in torch: FGSM, PGD with random restarts, and AutoAttack from torchattacks.

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
    projecting back to the ball and to [0, 1] after each. All restarts run as one batch of
    ``restarts * N`` inputs, from which an example leaves as soon as any of its restarts
    misclassifies it. Per example, the returned input is that misclassified iterate or,
    when no iterate of any restart is misclassified, the final iterate with the highest
    loss over all restarts.

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
    n = x.shape[0]
    x0 = x.detach().repeat(restarts, *([1] * (x.dim() - 1)))
    y0 = y.repeat(restarts)
    x_adv = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x.dtype) * 2 - 1
        x_adv = _project(x0 + eps * noise, x0, eps)
    # Row r * n + i is restart r of example i; a row leaves the batch once its example is
    # misclassified by any restart, keeping that restart's misclassified iterate.
    fooled = torch.zeros(x0.shape[0], dtype=torch.bool)
    active = torch.arange(x0.shape[0])
    for i in range(steps + 1):
        current = x_adv[active]
        if i < steps:
            grad, logits = _input_grad(model, current, y0[active], loss)
        else:
            with torch.no_grad():
                logits = model(current)
        fooled[active[logits.argmax(1) != y0[active]]] = True
        done = fooled.view(restarts, n).any(0)
        keep = ~done[active % n]
        if i < steps:
            moved = current[keep] + step * grad[keep].sign()
            active = active[keep]
            x_adv[active] = _project(moved, x0[active], eps).detach()
        else:
            active = active[keep]
    with torch.no_grad():
        final_loss = attack_loss(model(x_adv), y0, loss).view(restarts, n)
    fooled_r = fooled.view(restarts, n)
    # Per example: the first restart that misclassified it, else the highest final loss.
    order = torch.arange(restarts, 0, -1)[:, None].expand(restarts, n)
    first = torch.where(fooled_r, order, torch.zeros_like(order)).argmax(0)
    pick = torch.where(fooled_r.any(0), first, final_loss.argmax(0))
    return x_adv.view(restarts, n, *x.shape[1:])[pick, torch.arange(n)].detach()


#: Iterations of APGD-CE, APGD-T and FAB-T in the standard version (Square: 5000 queries).
AUTOATTACK_STEPS = 100
#: Random restarts of each attack of the standard version.
AUTOATTACK_RESTARTS = 1


def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    seed: int,
    image_shape: tuple[int, ...] = (1, 8, 8),
    n_classes: int = 10,
) -> torch.Tensor:
    """AutoAttack (Croce and Hein 2020) under an L-inf budget, as ``torchattacks`` runs it.

    The standard version: APGD on cross-entropy, targeted APGD on the DLR loss, targeted FAB
    (100 iterations each, one restart, every other class as a target) and the
    gradient-free Square attack (5000 queries), each run on the examples the earlier ones
    did not break. The library expects images, so the flat inputs are shown to it as
    ``image_shape`` and flattened again before the model sees them.

    Args:
        model: The classifier (put in eval mode by the caller).
        x: Clean inputs (N, F) in [0, 1], F the product of ``image_shape``.
        y: True labels (N,).
        eps: L-inf radius.
        seed: Seed of the library's attacks (determinism; the library reseeds torch's
            global generator with it).
        image_shape: (channels, height, width) of one input.
        n_classes: Number of classes (targets of APGD-T and FAB-T).

    Returns:
        Adversarial inputs, shape of ``x``, within the eps-ball and [0, 1].
    """
    import torchattacks

    if eps == 0:
        return x.detach().clone()
    image_model = nn.Sequential(nn.Flatten(), model).eval()
    attack = torchattacks.AutoAttack(
        image_model, norm="Linf", eps=eps, version="standard", n_classes=n_classes, seed=seed
    )
    images = x.detach().reshape(x.shape[0], *image_shape)
    adv = attack(images, y).reshape(x.shape).detach()
    # The library's result is projected again so that no rounding leaves the ball.
    return _project(adv, x.detach(), eps)


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
