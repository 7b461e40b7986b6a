"""Errors raised while explaining predictions or scoring suspicion."""

from __future__ import annotations


class ExplainerError(Exception):
    """Base error of the explainer; the message says what is wrong and how to fix it."""


class ExplanationInputError(ExplainerError):
    """The inputs, target or method given to an explanation are not usable."""


class SuspicionInputError(ExplainerError):
    """The probabilities or squeezing scores given to the suspicion score are not usable."""
