"""Screening an input while OPA decides, withheld until the decision says it may be used.

The screening of a batch is the feature squeezer's verdict (the model's forward passes,
which also give the prediction) and each instance's suspicion score. The request path
starts the policy query and then screens the input on the same thread, so OPA evaluates
meanwhile. :class:`Withheld` keeps what that computation produced, or the error it
raised, so that nothing of it reaches the client, the review queue or the records unless
OPA allowed the request: on a denial it is simply dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import numpy as np
import numpy.typing as npt

from service.explainer import suspicion_score
from service.sanitizer.calibration import DetectionResult, Detector

T = TypeVar("T")


@dataclass(frozen=True)
class Screening:
    """The squeezer's results for a batch and each instance's suspicion score.

    Attributes:
        squeeze: Probabilities, detector scores and flags, one per instance.
        suspicion: Each instance's suspicion in [0, 1], shape (N,).
        detector: The detector's kind (``feature-squeezing`` for images).
    """

    squeeze: DetectionResult
    suspicion: npt.NDArray[np.float64]
    detector: str = "feature-squeezing"

    @property
    def flagged(self) -> bool:
        """Whether the squeezer flagged any instance (the policy's ``flagged_input``)."""
        return bool(self.squeeze.flagged.any())

    def flagged_instances(self) -> list[int]:
        """Return the indices of the flagged instances."""
        return [int(i) for i in np.flatnonzero(self.squeeze.flagged)]

    def review_reasons(self, suspicion_threshold: float) -> list[str]:
        """Return why a human should review the batch; empty when nothing calls for it.

        Args:
            suspicion_threshold: Suspicion above this queues the batch for review.
        """
        reasons = []
        if self.flagged:
            reasons.append(
                "feature squeezing flagged the input"
                if self.detector == "feature-squeezing"
                else f"the {self.detector} detector flagged the input"
            )
        top = float(self.suspicion.max())
        if top > suspicion_threshold:
            reasons.append(f"suspicion {top:.3f} above {suspicion_threshold}")
        return reasons


def screen_input(squeezer: Detector, x: npt.NDArray[np.float32]) -> Screening:
    """Run the detector on ``x`` and score each instance's suspicion (pure computation).

    Args:
        squeezer: The calibrated perturbation detector of the model's modality.
        x: The sanitized batch in unit form, shape (N, d).
    """
    squeeze = squeezer.analyze(x)
    threshold = max(squeezer.threshold, 1e-6)
    suspicion = np.array(
        [
            suspicion_score(squeeze.probs[i], float(squeeze.scores[i]), squeeze_threshold=threshold)
            for i in range(x.shape[0])
        ]
    )
    kind = getattr(squeezer, "kind", "feature-squeezing")
    return Screening(squeeze=squeeze, suspicion=suspicion, detector=kind)


class Withheld(Generic[T]):
    """What ran while OPA decided: its value or the error it raised, until asked for."""

    def __init__(self) -> None:
        self._value: T | None = None
        self._error: Exception | None = None
        self._ran = False

    def run(self, work: Callable[[], T] | None) -> None:
        """Run ``work`` (if any), keeping its value or its error for :meth:`release`."""
        if work is None:
            return
        self._ran = True
        try:
            self._value = work()
        except Exception as err:  # raised later, only if the request gets that far
            self._error = err

    def release(self) -> T:
        """Return the value, or raise the error the work raised (once OPA allowed).

        Raises:
            RuntimeError: no work ran.
        """
        if self._error is not None:
            raise self._error
        if not self._ran:
            raise RuntimeError("no computation ran while OPA decided")
        return cast(T, self._value)
