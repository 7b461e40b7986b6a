"""Human review queue for flagged requests (SQLite, shared by worker processes and the CLI)."""

from service.review.errors import (
    ReviewError,
    ReviewInputError,
    ReviewNotFoundError,
    ReviewStateError,
    ReviewStoreError,
)
from service.review.queue import ReviewItem, ReviewQueue, StatusFilter, Verdict

__all__ = [
    "ReviewError",
    "ReviewInputError",
    "ReviewItem",
    "ReviewNotFoundError",
    "ReviewQueue",
    "ReviewStateError",
    "ReviewStoreError",
    "StatusFilter",
    "Verdict",
]
