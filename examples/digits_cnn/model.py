"""Architecture of the digits CNN: two 3x3 convolutions, a max-pool and two linear layers.

ztml imports this file from the model package (entry point ``model:build``) and calls
``build(**architecture.arguments)`` from ``ztml-model.json``; the weights come from
``model.safetensors``. The network takes images (N, 1, 8, 8) with pixels in [0, 1].
"""

from __future__ import annotations

from torch import nn

N_CLASSES = 10


def build(channels: list[int], hidden: int) -> nn.Module:
    """Return an untrained CNN mapping (N, 1, 8, 8) images to (N, 10) logits.

    Layout: conv 3x3 (``channels[0]``) - ReLU - conv 3x3 (``channels[1]``) - ReLU -
    max-pool 2x2 (8x8 -> 4x4) - linear (``hidden``) - ReLU - linear (10).

    Args:
        channels: Output channels of the two convolutions, e.g. ``[16, 32]``.
        hidden: Width of the hidden linear layer, e.g. ``64``.

    Returns:
        The network (``nn.Sequential``).

    Raises:
        ValueError: If ``channels`` is not two widths >= 1 or ``hidden`` is below 1.
    """
    widths = [int(width) for width in channels]
    if len(widths) != 2 or min(widths) < 1 or int(hidden) < 1:
        raise ValueError(
            f"channels: need two widths >= 1 and hidden >= 1, got {channels!r} and {hidden!r}"
        )
    first, second = widths
    return nn.Sequential(
        nn.Conv2d(1, first, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(first, second, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(second * 4 * 4, int(hidden)),
        nn.ReLU(),
        nn.Linear(int(hidden), N_CLASSES),
    )
