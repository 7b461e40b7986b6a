"""Explanations (Captum attributions) and a per-request suspicion score.

Torch and Captum are imported when an explanation is computed, not at import time.
"""

from service.explainer.attributions import METHODS, Method, explain
from service.explainer.errors import ExplainerError, ExplanationInputError, SuspicionInputError
from service.explainer.suspicion import DEFAULT_SQUEEZE_THRESHOLD, suspicion_score

__all__ = [
    "DEFAULT_SQUEEZE_THRESHOLD",
    "METHODS",
    "ExplainerError",
    "ExplanationInputError",
    "Method",
    "SuspicionInputError",
    "explain",
    "suspicion_score",
]
