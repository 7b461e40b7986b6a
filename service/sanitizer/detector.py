"""Adversarial-perturbation detection by feature squeezing (Xu, Evans and Qi, 2018).

An input's score is the largest L1 distance between the model's softmax output on the
input and on each squeezed copy of it. Natural inputs give nearly the same prediction
after squeezing; adversarial perturbations, which live in the detail squeezing removes,
often do not. The threshold is calibrated on clean validation data so that at most a
chosen fraction of clean inputs (the false-positive rate) scores above it.

What a flagged input means for a request (reject it, or serve it and flag it for human
review) is a policy decision made by the service, not here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from service.sanitizer.errors import CalibrationError, PerturbationDetectedError
from service.sanitizer.squeezers import BitDepth, Quantize, Squeezer, default_squeezers

if TYPE_CHECKING:
    from torch import nn

N_FEATURES = 64


@dataclass(frozen=True)
class SqueezeResult:
    """Feature-squeezing results for a batch.

    Attributes:
        probs: Softmax of the model on the original inputs, shape (N, C).
        scores: Max L1 distance over the squeezers, shape (N,), in [0, 2].
        flagged: ``scores > threshold``, shape (N,).
        per_squeezer: Each squeezer's L1 distances, keyed by squeezer name.
    """

    probs: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    flagged: npt.NDArray[np.bool_]
    per_squeezer: dict[str, npt.NDArray[np.float32]]


def _as_array(x: object, n_features: int = N_FEATURES) -> npt.NDArray[np.float32]:
    """Return ``x`` as a float32 (N, d) numpy array (no copy when it already is one)."""
    import torch

    if isinstance(x, torch.Tensor):
        array = x.detach().to(device="cpu", dtype=torch.float32).numpy()
    else:
        array = np.asarray(x, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != n_features:
        raise ValueError(f"expected inputs of shape (N, {n_features}), got {tuple(array.shape)}")
    return array


def _squeeze_into(
    x: npt.NDArray[np.float32], squeezers: Sequence[Squeezer], out: npt.NDArray[np.float32]
) -> None:
    """Write every squeezer's copy of ``x`` into ``out``, shape (S, N, d).

    Uniform quantizers (:class:`BitDepth`, :class:`Quantize`) run together as one
    broadcast rounding in float32, element for element the same arithmetic as calling
    them one by one (IEEE multiply, round half to even, divide); any other squeezer is
    called on its own.
    """
    import torch

    quantizers = [
        (i, s.levels) for i, s in enumerate(squeezers) if isinstance(s, BitDepth | Quantize)
    ]
    if quantizers:
        rows = [i for i, _ in quantizers]
        tops = np.array([n - 1 for _, n in quantizers], dtype=np.float32).reshape(-1, 1, 1)
        rounded = np.round(np.clip(x, 0.0, 1.0)[None] * tops) / tops
        if len(rows) == len(squeezers):
            out[...] = rounded
        else:
            out[rows] = rounded
    if len(quantizers) < len(squeezers):
        tensor = torch.tensor(x)
        done = {i for i, _ in quantizers}
        for i, squeeze in enumerate(squeezers):
            if i not in done:
                out[i] = squeeze(tensor).numpy()


def _distance_matrix(
    model: nn.Module, x: object, squeezers: Sequence[Squeezer], n_features: int = N_FEATURES
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Return the softmax on ``x`` (N, C) and the (S, N) L1 distances, in one pass.

    The input and its squeezed copies are written into one (S + 1, N, d) buffer that
    goes through the model as a single batch under ``torch.inference_mode``; the small
    element-wise work around it runs in numpy, which has less per-call overhead.
    """
    import torch

    if not squeezers:
        raise ValueError("at least one squeezer is needed")
    array = _as_array(x, n_features)
    n = array.shape[0]
    batch = np.empty((len(squeezers) + 1, n, n_features), dtype=np.float32)
    batch[0] = array
    _squeeze_into(array, squeezers, batch[1:])
    with torch.inference_mode():
        logits = model(torch.from_numpy(batch.reshape(-1, n_features)))
        probs = torch.softmax(logits.float(), dim=1).numpy().reshape(len(squeezers) + 1, n, -1)
    distances = np.abs(probs[1:] - probs[0]).sum(axis=2, dtype=np.float32)
    return probs[0], distances


def squeeze_distances(
    model: nn.Module, x: object, squeezers: Sequence[Squeezer], *, n_features: int = N_FEATURES
) -> tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]:
    """Return the softmax on ``x`` and every squeezer's L1 distance to it.

    The input and all squeezed copies go through the model in one batched forward pass
    (under ``torch.inference_mode``); uniform quantizers are applied as one broadcast
    operation.

    Args:
        model: The classifier (in eval mode), mapping (N, d) to logits.
        x: Inputs of shape (N, d) in [0, 1] (numpy array or tensor).
        squeezers: The squeezers to apply.
        n_features: d (default: the digits' 64).

    Returns:
        The probabilities (N, C) and, per squeezer name, distances (N,).

    Raises:
        ValueError: If ``x`` is not (N, d) or no squeezer is given.
    """
    probs, distances = _distance_matrix(model, x, squeezers, n_features)
    return probs, {s.name: distances[i] for i, s in enumerate(squeezers)}


def calibrate_threshold(
    model: nn.Module,
    x_clean_val: object,
    *,
    fpr: float = 0.05,
    squeezers: Sequence[Squeezer] | None = None,
    n_features: int = N_FEATURES,
) -> float:
    """Choose the smallest threshold that flags at most ``fpr`` of the clean inputs.

    With n clean scores sorted ascending, the threshold is the ``ceil(n * (1 - fpr))``-th
    of them; inputs flag when their score is strictly above it, so at most
    ``floor(n * fpr)`` clean inputs flag.

    Args:
        model: The classifier (in eval mode).
        x_clean_val: Clean held-out inputs (N, d); use the validation split, not test.
        fpr: The largest accepted false-positive rate, in (0, 1).
        squeezers: The squeezers (default: :func:`default_squeezers`).
        n_features: d (default: the digits' 64).

    Returns:
        The threshold.

    Raises:
        CalibrationError: If ``fpr`` is out of range or there are too few inputs to
            resolve it (fewer than ``1 / fpr``).
    """
    check_fpr(fpr)
    try:
        _, distances = _distance_matrix(
            model, x_clean_val, squeezers or default_squeezers(), n_features
        )
    except ValueError as err:
        raise CalibrationError(f"cannot calibrate: {err}") from err
    return threshold_for(distances.max(axis=0), fpr)


def check_fpr(fpr: float) -> None:
    """Refuse a false-positive rate outside (0, 1).

    Raises:
        CalibrationError: If ``fpr`` is not a finite number in (0, 1).
    """
    if not 0.0 < fpr < 1.0 or not math.isfinite(fpr):
        raise CalibrationError(f"the false-positive rate must be in (0, 1), got {fpr}")


def threshold_for(clean_scores: npt.ArrayLike, fpr: float) -> float:
    """Return the smallest threshold that at most ``floor(n * fpr)`` clean scores exceed.

    With n clean scores sorted ascending, the threshold is the ``ceil(n * (1 - fpr))``-th
    of them; inputs flag when their score is strictly above it.

    Args:
        clean_scores: The detector's scores of n clean inputs.
        fpr: The largest accepted false-positive rate, in (0, 1).

    Returns:
        The threshold.

    Raises:
        CalibrationError: If ``fpr`` is out of range, there are too few scores to resolve
            it (fewer than ``1 / fpr``), or the threshold would not be finite.
    """
    check_fpr(fpr)
    scores = np.sort(np.asarray(clean_scores, dtype=np.float64).reshape(-1))
    n = scores.shape[0]
    if n < math.ceil(1.0 / fpr):
        raise CalibrationError(
            f"{n} clean inputs cannot resolve a false-positive rate of {fpr}; use at least "
            f"{math.ceil(1.0 / fpr)} (the validation split has enough)"
        )
    k = math.ceil(n * (1.0 - fpr))
    threshold = float(scores[k - 1])
    if not math.isfinite(threshold):
        raise CalibrationError(
            f"more than {fpr:.1%} of the clean inputs have no finite score; the threshold "
            "would flag nothing. Use more validation data per class."
        )
    return threshold


class FeatureSqueezer:
    """Score and flag inputs by feature squeezing.

    Args:
        model: The classifier (in eval mode), mapping (N, d) inputs to logits.
        threshold: Scores strictly above this flag an input (see
            :func:`calibrate_threshold`).
        squeezers: The squeezers (default: :func:`default_squeezers`); calibrate the
            threshold with the same ones.
        n_features: d, the width of an input (default: the digits' 64).

    Raises:
        ValueError: If the threshold is not a finite number in [0, 2].
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        threshold: float,
        squeezers: Sequence[Squeezer] | None = None,
        n_features: int = N_FEATURES,
    ) -> None:
        if not math.isfinite(threshold) or not 0.0 <= threshold <= 2.0:
            raise ValueError(f"the threshold must be a finite number in [0, 2], got {threshold}")
        self.model = model
        self.threshold = float(threshold)
        self.squeezers: tuple[Squeezer, ...] = tuple(squeezers or default_squeezers())
        self.n_features = int(n_features)

    def analyze(self, x: object) -> SqueezeResult:
        """Return probabilities, scores and flags for a batch (one forward pass).

        Args:
            x: Inputs (N, d) in [0, 1].

        Returns:
            The results; ``probs`` can serve the prediction without another forward pass.
        """
        probs, distances = _distance_matrix(self.model, x, self.squeezers, self.n_features)
        scores = distances.max(axis=0)
        per = {s.name: distances[i] for i, s in enumerate(self.squeezers)}
        return SqueezeResult(probs, scores, scores > self.threshold, per)

    def scores(self, x: object) -> npt.NDArray[np.float32]:
        """Return each input's score: the max L1 distance over the squeezers, shape (N,)."""
        return self.analyze(x).scores

    def flags(self, x: object) -> npt.NDArray[np.bool_]:
        """Return which inputs score above the threshold, shape (N,)."""
        return self.analyze(x).flagged

    def check(self, x: object) -> None:
        """Raise if any input is flagged.

        Raises:
            PerturbationDetectedError: Naming the flagged instances and their scores.
        """
        result = self.analyze(x)
        if result.flagged.any():
            indices = [int(i) for i in np.flatnonzero(result.flagged)]
            raise PerturbationDetectedError(
                indices, [float(result.scores[i]) for i in indices], self.threshold
            )
