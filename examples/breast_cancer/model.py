"""Architecture of the breast-cancer classifier: a small ReLU MLP on 30 standardized features.

ztml imports this file from the model package (entry point ``model:build``) and calls
``build(**architecture.arguments)`` from ``ztml-model.json``; the weights come from
``model.safetensors``. The network sees standardized features: ztml applies the
contract's ``standardize`` preprocessing (training mean and std) before calling it.
"""

from __future__ import annotations

from torch import nn

N_FEATURES = 30
N_CLASSES = 2  # malignant, benign


def build(hidden: list[int]) -> nn.Module:
    """Return an untrained MLP mapping (N, 30) standardized features to (N, 2) logits.

    Args:
        hidden: Widths of the hidden layers, e.g. ``[32, 16]``.

    Returns:
        The network (``nn.Sequential`` of Linear and ReLU layers).

    Raises:
        ValueError: If ``hidden`` is empty or holds a width below 1.
    """
    widths = [int(width) for width in hidden]
    if not widths or min(widths) < 1:
        raise ValueError(f"hidden: need one or more widths >= 1, got {hidden!r}")
    layers: list[nn.Module] = []
    fan_in = N_FEATURES
    for width in widths:
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, N_CLASSES))
    return nn.Sequential(*layers)
