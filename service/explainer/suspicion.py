"""A single suspicion score per request, for humans deciding what to review.

Two signals combine: a low confidence margin (top-1 minus top-2 probability: a model
that barely prefers its answer is near a decision boundary, where adversarial examples
found by PGD land) and feature-squeezing disagreement (the squeezing score relative to
its calibrated threshold). Each becomes a value in [0, 1] and they combine like
independent alarms: ``1 - (1 - margin_term) * (1 - squeeze_term)``.
"""

from __future__ import annotations

import math

import numpy as np

from service.explainer.errors import SuspicionInputError

# A squeezing score equal to the threshold contributes 0.5, twice the threshold 0.75. The
# default is typical of thresholds calibrated at 5% FPR; pass the calibrated one.
DEFAULT_SQUEEZE_THRESHOLD = 0.1
PROBABILITY_TOLERANCE = 1e-3


def _margin_term(probs: np.ndarray) -> np.ndarray:
    ordered = np.sort(probs, axis=1)
    margin = ordered[:, -1] - ordered[:, -2]
    return np.clip(1.0 - margin, 0.0, 1.0)


def _squeeze_term(scores: np.ndarray, threshold: float) -> np.ndarray:
    return 1.0 - np.exp2(-np.clip(scores, 0.0, None) / threshold)


def suspicion_score(
    probs: object,
    squeeze_score: object,
    *,
    squeeze_threshold: float = DEFAULT_SQUEEZE_THRESHOLD,
) -> float:
    """Return how suspicious a prediction is, in [0, 1] (higher is more suspicious).

    Args:
        probs: Softmax probabilities of one input, shape (C,), or of a batch, (N, C).
        squeeze_score: The feature-squeezing score of that input (a number), or of each
            input of the batch, shape (N,).
        squeeze_threshold: The calibrated squeezing threshold (pass
            ``FeatureSqueezer.threshold``); a score at the threshold counts 0.5.

    Returns:
        The suspicion of the input, or for a batch the highest suspicion of its inputs.

    Raises:
        SuspicionInputError: If the arrays are malformed, not probabilities, or the
            threshold is not positive.
    """
    if not math.isfinite(squeeze_threshold) or squeeze_threshold <= 0:
        raise SuspicionInputError(
            f"squeeze_threshold must be a positive number, got {squeeze_threshold}"
        )
    try:
        p = np.asarray(probs, dtype=np.float64)
        s = np.asarray(squeeze_score, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise SuspicionInputError(f"probs and squeeze_score must be numeric: {err}") from err
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise SuspicionInputError(f"probs must have shape (C,) or (N, C), C >= 2; got {p.shape}")
    if s.shape[0] != p.shape[0]:
        raise SuspicionInputError(f"got {s.shape[0]} squeezing scores for {p.shape[0]} inputs")
    if not (np.isfinite(p).all() and np.isfinite(s).all()):
        raise SuspicionInputError("probs and squeeze_score must be finite")
    sums = p.sum(axis=1)
    if (p < -PROBABILITY_TOLERANCE).any() or (np.abs(sums - 1.0) > PROBABILITY_TOLERANCE).any():
        raise SuspicionInputError("probs must be probabilities (softmax outputs summing to 1)")
    p = np.clip(p, 0.0, 1.0)
    combined = 1.0 - (1.0 - _margin_term(p)) * (1.0 - _squeeze_term(s, squeeze_threshold))
    return float(np.clip(combined.max(), 0.0, 1.0))
