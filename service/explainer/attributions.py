"""Per-feature attributions for a classifier on unit inputs, computed with Captum.

Two methods: Integrated Gradients (Sundararajan et al. 2017) from an all-zero baseline
(a blank image for the digits; every feature at its lower bound for a model whose unit
network maps (N, d) unit inputs to logits), whose attributions sum to the target logit's
change from the baseline (completeness), and Saliency (the absolute input gradient),
which is cheaper. Inputs have any width d: the default expects the digits' 64, and
``n_features=None`` takes d from the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import numpy.typing as npt

from service.explainer.errors import ExplanationInputError

if TYPE_CHECKING:
    import torch
    from torch import nn

Method = Literal["integrated_gradients", "saliency"]
METHODS: tuple[Method, ...] = get_args(Method)
N_FEATURES = 64
MAX_STEPS = 512


def _inputs(x: object, n_features: int | None = N_FEATURES) -> torch.Tensor:
    import torch

    width = "d" if n_features is None else str(n_features)
    try:
        tensor = x.detach() if isinstance(x, torch.Tensor) else torch.tensor(np.asarray(x))
        tensor = tensor.to(torch.float32).clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ExplanationInputError(
            f"inputs must be a (N, {width}) array of numbers: {err}"
        ) from err
    wrong_width = tensor.ndim == 2 and (
        tensor.shape[1] == 0 if n_features is None else tensor.shape[1] != n_features
    )
    if tensor.ndim != 2 or wrong_width or tensor.shape[0] == 0:
        raise ExplanationInputError(
            f"inputs must have shape (N, {width}) with N >= 1, got {tuple(tensor.shape)}"
        )
    if not torch.isfinite(tensor).all():
        raise ExplanationInputError("inputs contain NaN or infinite values; sanitize them first")
    return tensor


def _targets(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | None) -> torch.Tensor:
    import torch

    with torch.no_grad():
        logits = model(x)
    n_classes = logits.shape[1]
    if target is None:
        return logits.argmax(dim=1)
    values = [target] * x.shape[0] if isinstance(target, int | np.integer) else list(target)
    if len(values) != x.shape[0]:
        raise ExplanationInputError(
            f"got {len(values)} targets for {x.shape[0]} inputs; give one per input, one for "
            "all, or None for the predicted class"
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ExplanationInputError(f"targets must be class indices, got {value!r}")
        if not 0 <= int(value) < n_classes:
            raise ExplanationInputError(f"target {value} is not a class in 0..{n_classes - 1}")
    return torch.tensor([int(v) for v in values], dtype=torch.long)


def explain(
    model: nn.Module,
    x: object,
    *,
    method: Method = "integrated_gradients",
    target: int | Sequence[int] | None = None,
    n_steps: int = 32,
    n_features: int | None = N_FEATURES,
) -> npt.NDArray[np.float32]:
    """Attribute the model's score for a class to each input feature.

    Args:
        model: The classifier (in eval mode), mapping (N, d) unit inputs to logits.
        x: Inputs of shape (N, d) in [0, 1] (numpy array or tensor).
        method: ``integrated_gradients`` (zero baseline, Gauss-Legendre steps) or
            ``saliency`` (absolute gradient of the target logit).
        target: The class to explain: None for each input's predicted class, one index
            for all inputs, or one index per input.
        n_steps: Integration steps for Integrated Gradients (1 to 512).
        n_features: d, the expected width (default: the digits' 64); None takes it from
            ``x``.

    Returns:
        Attributions of shape (N, d), float32. For Integrated Gradients each row sums
        approximately to ``logit(x)[target] - logit(0)[target]``.

    Raises:
        ExplanationInputError: On a bad method, input shape, target or step count.
    """
    if method not in METHODS:
        raise ExplanationInputError(f"unknown method {method!r}; choose one of {METHODS}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or not 1 <= n_steps <= MAX_STEPS:
        raise ExplanationInputError(f"n_steps must be an integer in 1..{MAX_STEPS}, got {n_steps}")
    import torch

    inputs = _inputs(x, n_features)
    targets = _targets(model, inputs, target)
    # Captum takes gradients with respect to the inputs only (torch.autograd.grad), so the
    # model's parameters and their .grad are left untouched and concurrent calls are safe.
    attributions = _attribute(model, inputs, targets, method=method, n_steps=n_steps)
    return attributions.detach().to(torch.float32).numpy()


def _attribute(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, method: Method, n_steps: int
) -> torch.Tensor:
    import torch
    from captum.attr import IntegratedGradients, Saliency

    inputs = inputs.requires_grad_(True)
    with torch.enable_grad():
        if method == "saliency":
            attributions = Saliency(model).attribute(inputs, target=targets, abs=True)
        else:
            attributions = IntegratedGradients(model).attribute(
                inputs,
                baselines=torch.zeros_like(inputs),
                target=targets,
                n_steps=n_steps,
                method="gausslegendre",
                internal_batch_size=max(1, min(inputs.shape[0] * n_steps, 4096)),
            )
    return attributions
