"""Training objectives of the defenses: standard, Madry PGD, TRADES and distillation.

Each function returns the mean loss of one mini-batch; the training loop in
:mod:`service.model.train` owns the optimiser, the schedule and the epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from service.model.attacks import pgd_final_iterate


def standard_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """Cross-entropy on clean inputs, optionally of logits divided by a temperature."""
    return F.cross_entropy(model(x) / temperature, y)


def madry_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Cross-entropy on PGD adversarial examples (Madry et al. 2018).

    Args:
        model: The network being trained.
        x: Clean batch.
        y: Labels.
        eps: L-inf training radius (0 means plain training).
        steps: PGD steps used to craft the training examples.
        generator: Random generator for PGD's random start.

    Returns:
        The mean adversarial cross-entropy.
    """
    if eps > 0:
        x = pgd_final_iterate(model, x, y, eps=eps, steps=steps, generator=generator)
    return F.cross_entropy(model(x), y)


def trades_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    beta: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """TRADES (Zhang et al. 2019): clean cross-entropy plus beta times a robustness KL term.

    The adversarial point maximises ``KL(p(x) || p(x'))`` by PGD inside the eps-ball,
    started at a small Gaussian perturbation of ``x`` as in the reference implementation.

    Args:
        model: The network being trained.
        x: Clean batch.
        y: Labels.
        eps: L-inf radius.
        steps: PGD steps on the KL term.
        beta: Weight of the KL term (the TRADES paper uses 6).
        generator: Random generator for the starting point.

    Returns:
        The mean TRADES loss.
    """
    logits = model(x)
    if eps <= 0:
        return F.cross_entropy(logits, y)
    p_clean = F.softmax(logits.detach(), dim=1)
    alpha = 2.5 * eps / steps
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    x_adv = torch.clamp(x + 0.001 * noise, 0.0, 1.0).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0).detach()
    robust = F.kl_div(
        F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean"
    )
    return F.cross_entropy(logits, y) + beta * robust


def distillation_loss(
    student: nn.Module, x: torch.Tensor, soft_labels: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """Cross-entropy of the student's tempered softmax against the teacher's soft labels.

    Defensive distillation (Papernot et al. 2016): the teacher is trained at temperature
    T, the student learns the teacher's softmax at T, and the student is deployed at T=1,
    which makes its softmax saturate. That masks cross-entropy gradients but does not
    make the network robust: attacks on the logits still succeed (Carlini and Wagner 2017).

    Args:
        student: The network being trained.
        x: Clean batch.
        soft_labels: The teacher's probabilities at temperature T, shape (N, 10).
        temperature: The distillation temperature T.

    Returns:
        The mean soft-label cross-entropy.
    """
    log_p = F.log_softmax(student(x) / temperature, dim=1)
    return -(soft_labels * log_p).sum(dim=1).mean()
