"""What a review item keeps of a request's inputs: the values and how to read them.

The queue serves any model, so an item's inputs are ``(N, d)`` rows of any width ``d``,
optionally described by the model's contract: the ``(C, H, W)`` layout of an image model
(``ztml review show`` draws each row as a picture) or the feature names of a tabular
model (it shows a ``feature: value`` table). The description is stored beside the rows as
one JSON object, ``{"layout": [C, H, W] | null, "features": [...] | null}``, in the
nullable column ``input_schema``; rows queued before that column existed have NULL there
and read as they always did (64 values of an 8x8 digit).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.review.errors import ReviewError, ReviewInputError

#: The widest row a review item keeps.
MAX_FEATURES = 1_000_000
#: The most rows (instances) one item keeps.
MAX_INSTANCES = 1024
#: The longest feature name.
MAX_NAME = 256
#: The width of the built-in digits model's rows (an 8x8 image), the legacy default.
DIGITS_FEATURES = 64
DIGITS_SIDE = 8

Layout = tuple[int, int, int]


@dataclass(frozen=True)
class InputSchema:
    """How to read an item's rows: an image layout, feature names, or neither.

    Attributes:
        layout: ``(C, H, W)`` of an image model, or None.
        features: The names of the ``d`` features of a tabular model, or None.
    """

    layout: Layout | None = None
    features: tuple[str, ...] | None = None

    def encode(self) -> str | None:
        """Return the stored form (None when there is nothing to describe)."""
        if self.layout is None and self.features is None:
            return None
        return json.dumps(
            {
                "layout": None if self.layout is None else list(self.layout),
                "features": None if self.features is None else list(self.features),
            }
        )

    @classmethod
    def decode(cls, stored: str | None) -> InputSchema:
        """Read the stored form; NULL (an item from before layouts existed) describes nothing.

        Raises:
            ReviewError: If the stored form is not one :meth:`encode` writes.
        """
        if stored is None:
            return cls()
        try:
            found = json.loads(stored)
            layout, features = found["layout"], found["features"]
            return cls(
                layout=None if layout is None else _triple(layout),
                features=None if features is None else tuple(str(f) for f in features),
            )
        except (ValueError, TypeError, KeyError) as err:
            raise ReviewError(f"input_schema {stored[:80]!r} is corrupt: {err}") from err


def _triple(layout: Sequence[int]) -> Layout:
    c, h, w = (int(n) for n in layout)
    return (c, h, w)


def check_layout(layout: object, width: int) -> Layout | None:
    """Return ``layout`` as ``(C, H, W)`` if it describes rows of ``width`` values.

    Raises:
        ReviewInputError: If it is not three positive integers whose product is ``width``.
    """
    if layout is None:
        return None
    if (
        isinstance(layout, str | bytes)
        or not isinstance(layout, Sequence | np.ndarray)
        or len(layout) != 3
        or not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in layout)
        or not all(int(n) >= 1 for n in layout)
    ):
        raise ReviewInputError(f"layout must be (C, H, W), three positive integers, got {layout!r}")
    c, h, w = (int(n) for n in layout)
    if c * h * w != width:
        raise ReviewInputError(
            f"layout {(c, h, w)} holds {c * h * w} values but the instances have {width} "
            "features per row; give the model's (C, H, W) or no layout"
        )
    return (c, h, w)


def check_features(features: object, width: int) -> tuple[str, ...] | None:
    """Return the feature names if there is one non-empty name per value of a row.

    Raises:
        ReviewInputError: If they are not ``width`` non-empty strings.
    """
    if features is None:
        return None
    if isinstance(features, str | bytes) or not isinstance(features, Sequence):
        raise ReviewInputError(f"features must be a sequence of names, got {type(features)}")
    if len(features) != width:
        raise ReviewInputError(
            f"features has {len(features)} names but the instances have {width} values per row"
        )
    if not all(isinstance(f, str) and 0 < len(f) <= MAX_NAME for f in features):
        raise ReviewInputError(
            f"features must be non-empty strings of at most {MAX_NAME} characters"
        )
    return tuple(features)


def check_instances(instances: object, layout: object = None) -> list[list[float]]:
    """Return the inputs as ``(N, d)`` rows of finite floats.

    ``(N, 8, 8)`` digits, and ``(N, C, H, W)`` images matching ``layout``, are flattened.

    Raises:
        ReviewInputError: If they are not numbers of shape (N, d) with 1 <= N <=
            :data:`MAX_INSTANCES` and 1 <= d <= :data:`MAX_FEATURES`, or not finite.
    """
    try:
        array = np.asarray(instances, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ReviewInputError(f"instances must be numbers of shape (N, d): {err}") from err
    if array.ndim == 3 and array.shape[1:] == (DIGITS_SIDE, DIGITS_SIDE):
        array = array.reshape(array.shape[0], DIGITS_FEATURES)
    elif array.ndim == 4 and isinstance(layout, Sequence) and array.shape[1:] == tuple(layout):
        array = array.reshape(array.shape[0], -1)
    if (
        array.ndim != 2
        or not 1 <= array.shape[0] <= MAX_INSTANCES
        or not 1 <= array.shape[1] <= MAX_FEATURES
    ):
        raise ReviewInputError(
            f"instances must have shape (N, d) with 1 <= N <= {MAX_INSTANCES} and "
            f"1 <= d <= {MAX_FEATURES}, got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ReviewInputError("instances must be finite numbers")
    rows: list[list[float]] = array.tolist()
    return rows
