"""Errors raised by the human review queue."""

from __future__ import annotations


class ReviewError(Exception):
    """Base error of the review queue; the message says what is wrong and how to fix it."""


class ReviewNotFoundError(ReviewError):
    """No review item has the given id."""


class ReviewStateError(ReviewError):
    """The item is not in a state that allows the operation (e.g. already resolved)."""


class ReviewInputError(ReviewError):
    """A field given to the queue is malformed (verdict, status, suspicion, instances...)."""


class ReviewStoreError(ReviewError):
    """The queue database cannot be used safely (permissions, corruption, unreadable)."""
