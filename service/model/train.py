"""Train the digits classifier with one of the defenses, deterministically.

Use :func:`train` (``train(defense="pgd", profile="fast")``) to get a trained network and
its training time; :mod:`service.model.pipeline` adds evaluation and the artifact files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from service.model.config import TrainConfig, config_for
from service.model.data import Splits, load_splits
from service.model.defenses import distillation_loss, madry_loss, standard_loss, trades_loss
from service.model.net import DigitsNet
from service.model.seeding import seed_everything

# Called as progress(phase, done, total) after every epoch.
ProgressFn = Callable[[str, int, int], None]


@dataclass
class TrainedModel:
    """A trained network, the settings that made it and how long training took."""

    model: DigitsNet
    config: TrainConfig
    training_seconds: float
    cpu_seconds: float


def _eps_at(config: TrainConfig, epoch: int) -> float:
    if config.eps_warmup_epochs <= 0:
        return config.train_eps
    return config.train_eps * min(1.0, (epoch + 1) / config.eps_warmup_epochs)


def _warm_up() -> None:
    """Run one optimiser step on a throw-away model so lazy imports are not timed."""
    model = DigitsNet((8,))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(1, 64)).sum().backward()
    optimizer.step()


def _fit(
    *,
    config: TrainConfig,
    x: torch.Tensor,
    targets: torch.Tensor,
    epochs: int,
    batch_loss: Callable[[DigitsNet, torch.Tensor, torch.Tensor, int], torch.Tensor],
    phase: str,
    progress: ProgressFn | None,
) -> DigitsNet:
    model = DigitsNet(config.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches = (x.shape[0] + config.batch_size - 1) // config.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, epochs=epochs, steps_per_epoch=batches
    )
    shuffle = torch.Generator().manual_seed(config.seed + 1)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(x.shape[0], generator=shuffle)
        for start in range(0, x.shape[0], config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = batch_loss(model, x[idx], targets[idx], epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        if progress is not None:
            progress(phase, epoch + 1, epochs)
    model.eval()
    return model


def train(
    defense: str = "pgd",
    profile: str = "fast",
    *,
    config: TrainConfig | None = None,
    splits: Splits | None = None,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> TrainedModel:
    """Train a DigitsNet with a defense on the training split.

    Args:
        defense: ``none`` (standard training), ``pgd`` (Madry adversarial training),
            ``trades`` or ``distill`` (defensive distillation, deployed at T=1).
        profile: ``tiny``, ``fast`` or ``full`` (see :mod:`service.model.config`).
        config: A complete configuration; overrides defense, profile and overrides.
        splits: The data; defaults to :func:`service.model.data.load_splits`.
        progress: Optional callback ``progress(phase, epochs_done, epochs_total)``.
        **overrides: TrainConfig fields to change.

    Returns:
        The trained network (eval mode), its configuration and the training seconds.

    Raises:
        TrainingError: On an unknown defense, profile or setting.
    """
    config = config or config_for(defense, profile, **overrides)
    splits = splits or load_splits()
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed + 2)
    x = torch.from_numpy(splits.x_train.copy())
    y = torch.from_numpy(splits.y_train.copy())
    _warm_up()
    started, cpu_started = time.perf_counter(), time.process_time()

    def adversarial(
        model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, epoch: int
    ) -> torch.Tensor:
        eps = _eps_at(config, epoch)
        if config.defense == "trades":
            return trades_loss(
                model,
                xb,
                yb,
                eps=eps,
                steps=config.train_steps,
                beta=config.trades_beta,
                generator=gen,
            )
        return madry_loss(model, xb, yb, eps=eps, steps=config.train_steps, generator=gen)

    if config.defense in ("pgd", "trades"):
        model = _fit(
            config=config,
            x=x,
            targets=y,
            epochs=config.epochs,
            batch_loss=adversarial,
            phase=f"{config.defense} training",
            progress=progress,
        )
    elif config.defense == "distill":
        temp = config.temperature
        teacher = _fit(
            config=config,
            x=x,
            targets=y,
            epochs=config.teacher_epochs,
            batch_loss=lambda m, xb, yb, _e: standard_loss(m, xb, yb, temperature=temp),
            phase=f"teacher (T={temp:g})",
            progress=progress,
        )
        with torch.no_grad():
            soft = torch.softmax(teacher(x) / temp, dim=1)
        model = _fit(
            config=config,
            x=x,
            targets=soft,
            epochs=config.epochs,
            batch_loss=lambda m, xb, sb, _e: distillation_loss(m, xb, sb, temperature=temp),
            phase=f"student (T={temp:g})",
            progress=progress,
        )
    else:
        model = _fit(
            config=config,
            x=x,
            targets=y,
            epochs=config.epochs,
            batch_loss=lambda m, xb, yb, _e: standard_loss(m, xb, yb),
            phase="standard training",
            progress=progress,
        )
    return TrainedModel(
        model,
        config,
        training_seconds=round(time.perf_counter() - started, 3),
        cpu_seconds=round(time.process_time() - cpu_started, 3),
    )
