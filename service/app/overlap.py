"""Computation run while OPA decides, kept until the decision says it may be used.

The request path starts the policy query and then, on the same thread, does the
pure computation the response will need (the squeezer's forward passes); OPA evaluates
meanwhile. :class:`Early` holds what that computation produced, or the error it raised,
so that nothing of it reaches the client, the review queue or the records unless OPA
allowed the request: on a denial it is simply dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class Early(Generic[T]):
    """The outcome of computation run while OPA decided: a value or the error it raised."""

    def __init__(self) -> None:
        self._value: T | None = None
        self._error: Exception | None = None
        self._ran = False

    def run(self, work: Callable[[], T] | None) -> None:
        """Run ``work`` (if any), keeping its value or its error for :meth:`value`."""
        if work is None:
            return
        self._ran = True
        try:
            self._value = work()
        except Exception as err:  # raised later, only if the request gets that far
            self._error = err

    def value(self) -> T:
        """Return the value, or raise the error the work raised.

        Raises:
            RuntimeError: no work ran.
        """
        if self._error is not None:
            raise self._error
        if not self._ran:
            raise RuntimeError("no computation ran while OPA decided")
        return cast(T, self._value)
