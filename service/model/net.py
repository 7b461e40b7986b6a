"""The digits classifier: a small MLP on flattened 8x8 images, defined in code.

Artifacts hold only tensors (safetensors); the architecture is this class, and the loader
checks that an artifact's tensor names and shapes are exactly what this class expects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from service.model.data import N_CLASSES, N_FEATURES

ARCHITECTURE = "digits-mlp"
DEFAULT_HIDDEN: tuple[int, ...] = (512, 512)
MAX_WIDTH = 4096
MAX_LAYERS = 8


class DigitsNet(nn.Module):
    """A ReLU MLP mapping (N, 64) images in [0, 1] to (N, 10) logits.

    Args:
        hidden: Widths of the hidden layers.

    Raises:
        ValueError: If the widths are empty, too many or out of range.
    """

    def __init__(self, hidden: Sequence[int] = DEFAULT_HIDDEN) -> None:
        super().__init__()
        widths = tuple(int(w) for w in hidden)
        if not 1 <= len(widths) <= MAX_LAYERS or not all(1 <= w <= MAX_WIDTH for w in widths):
            raise ValueError(
                f"hidden widths must be 1..{MAX_LAYERS} integers in 1..{MAX_WIDTH}, got {hidden}"
            )
        self.hidden = widths
        layers: list[nn.Module] = []
        fan_in = N_FEATURES
        for width in widths:
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, N_CLASSES))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits for a batch of flattened images.

        Args:
            x: Float tensor of shape (N, 64) with values in [0, 1].

        Returns:
            Logits of shape (N, 10).
        """
        return self.layers(x)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Return the name and shape of every tensor an artifact of this network holds."""
        return {name: tuple(t.shape) for name, t in self.state_dict().items()}


def hidden_to_text(hidden: Sequence[int]) -> str:
    """Encode hidden widths for artifact metadata, e.g. ``"256,256"``."""
    return ",".join(str(int(w)) for w in hidden)


def hidden_from_text(text: str) -> tuple[int, ...]:
    """Decode hidden widths written by :func:`hidden_to_text`.

    Raises:
        ValueError: If the text is not a comma-separated list of positive integers.
    """
    parts = text.split(",")
    if not parts or not all(p.isdigit() and len(p) <= 5 for p in parts):
        raise ValueError(f"hidden widths must look like '256,256', got {text!r}")
    return tuple(int(p) for p in parts)
