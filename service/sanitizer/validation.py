"""Strict validation of prediction request bodies.

A request carries ``{"instances": [...]}``: a batch of 8x8 digit images, each either a
flat list of 64 numbers or 8 rows of 8 numbers, every value a finite number in [0, 1].
Anything else is refused with an :class:`InputValidationError` that names the offending
field, so a client can fix its request. The batch size is checked before any row is
looked at, so an oversized body costs no per-value work.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from service.sanitizer.errors import InputValidationError, PayloadTooLargeError

N_FEATURES = 64
IMAGE_SIDE = 8
VALUE_MIN = 0.0
VALUE_MAX = 1.0
ROW_HINT = "send 64 numbers in [0, 1] (a flattened 8x8 image) or 8 lists of 8 numbers"
#: The deepest nesting of JSON arrays and objects a body may have (a valid body has 3,
#: or 4 with 8x8 images).
MAX_JSON_DEPTH = 8

# Escapes (only valid inside strings) go first, then everything but brackets and quotes;
# what is left of each string, quote to quote (or to the end), then goes too.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_STRING = re.compile(rb'"[^"]*(?:"|\Z)')
_NESTING = np.zeros(256, dtype=np.int64)
_NESTING[list(b"[{")] = 1
_NESTING[list(b"]}")] = -1


def check_body_size(n_bytes: int, limit: int) -> None:
    """Refuse a request body larger than ``limit`` bytes.

    Args:
        n_bytes: The body size (from Content-Length or the bytes read).
        limit: The largest accepted size in bytes.

    Raises:
        PayloadTooLargeError: If ``n_bytes`` exceeds ``limit`` (HTTP 413).
        InputValidationError: If ``n_bytes`` is not a non-negative integer.
        ValueError: If ``limit`` is not a positive integer (a configuration error).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"the body size limit must be a positive integer, got {limit!r}")
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, int) or n_bytes < 0:
        raise InputValidationError(
            "content-length", f"must be a non-negative integer number of bytes, got {n_bytes!r}"
        )
    if n_bytes > limit:
        raise PayloadTooLargeError(n_bytes, limit)


def check_json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON body whose arrays and objects nest more than ``limit`` deep.

    Checked on the raw bytes before decoding, so a deeply nested body is named for what it
    is (rather than failing to decode) and never reaches the recursive decoder. Brackets
    inside strings do not count. The scan runs in C and numpy, about a tenth of the
    decoding's time.

    Args:
        body: The raw request body.
        limit: The deepest accepted nesting (``{"instances": [[...]]}`` is 3 deep).

    Raises:
        InputValidationError: If the body nests deeper than ``limit`` (field ``body``).
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return  # not enough brackets to nest too deep
    unescaped = _ESCAPE.sub(b"", body) if b"\\" in body else body
    brackets = _STRING.sub(b"", unescaped.translate(None, _NOT_STRUCTURE))
    steps = _NESTING[np.frombuffer(brackets, dtype=np.uint8)]
    depth = int(np.cumsum(steps).max(initial=0))
    if depth > limit:
        raise InputValidationError(
            "body",
            f"nests arrays and objects {depth} levels deep; the limit is {limit} (a valid "
            'body, {"instances": [[64 numbers], ...]}, nests 3 deep)',
        )


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


def _number(value: object, field: str) -> float:
    """Return one pixel as a float, or raise naming the field."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InputValidationError(field, f"expected a number in [0, 1], got {_describe(value)}")
    if isinstance(value, numbers.Integral):
        integer = int(value)
        if not VALUE_MIN <= integer <= VALUE_MAX:
            shown = str(integer) if abs(integer) < 10**12 else "a very large integer"
            raise InputValidationError(field, f"value {shown} is outside [0, 1]")
        return float(integer)
    number = float(value)
    if not math.isfinite(number):
        raise InputValidationError(
            field, f"value {number} is not a finite number; NaN and Infinity are not accepted"
        )
    if not VALUE_MIN <= number <= VALUE_MAX:
        raise InputValidationError(
            field, f"value {number:.6g} is outside [0, 1]; scale pixels to [0, 1]"
        )
    return number


def _is_sequence(value: object) -> bool:
    return isinstance(value, list | tuple)


def _row(row: object, field: str) -> list[float]:
    """Validate one image (64 numbers or 8x8) and return its 64 pixels."""
    if not _is_sequence(row):
        raise InputValidationError(field, f"expected a list, got {_describe(row)}; {ROW_HINT}")
    assert isinstance(row, list | tuple)
    if len(row) == IMAGE_SIDE and all(_is_sequence(r) for r in row):
        pixels: list[float] = []
        for i, line in enumerate(row):
            assert isinstance(line, list | tuple)
            if len(line) != IMAGE_SIDE:
                raise InputValidationError(
                    f"{field}[{i}]", f"has {len(line)} values, expected {IMAGE_SIDE}; {ROW_HINT}"
                )
            pixels.extend(_number(v, f"{field}[{i}][{j}]") for j, v in enumerate(line))
        return pixels
    if len(row) != N_FEATURES:
        raise InputValidationError(field, f"has {len(row)} values, expected 64; {ROW_HINT}")
    return [_number(v, f"{field}[{j}]") for j, v in enumerate(row)]


def _from_array(array: npt.NDArray[np.generic], max_batch: int) -> npt.NDArray[np.float32]:
    """Validate instances given as a numpy array."""
    if array.dtype.kind not in "iuf":
        raise InputValidationError(
            "instances", f"expected numbers, got an array of dtype {array.dtype}"
        )
    if array.ndim not in (2, 3) or array.shape[0] == 0:
        raise InputValidationError(
            "instances", f"expected shape (N, 64) or (N, 8, 8) with N >= 1, got {array.shape}"
        )
    if array.shape[0] > max_batch:
        raise InputValidationError(
            "instances", f"batch of {array.shape[0]} exceeds the limit of {max_batch}; split it"
        )
    if array.shape[1:] not in ((N_FEATURES,), (IMAGE_SIDE, IMAGE_SIDE)):
        raise InputValidationError(
            "instances", f"expected shape (N, 64) or (N, 8, 8), got {array.shape}"
        )
    flat = array.reshape(array.shape[0], N_FEATURES).astype(np.float64)
    bad = ~np.isfinite(flat) | (flat < VALUE_MIN) | (flat > VALUE_MAX)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        _number(float(flat[i, j]), f"instances[{i}][{j}]")
    return np.ascontiguousarray(flat, dtype=np.float32)


def parse_instances(payload: object, *, max_batch: int) -> npt.NDArray[np.float32]:
    """Validate a decoded request body and return its images as a float32 (N, 64) array.

    Args:
        payload: The JSON-decoded body, ``{"instances": [...]}`` (other keys are left to
            the caller), or the instances themselves (a list or a numpy array). Each
            instance is 64 numbers or 8 lists of 8 numbers, all finite and in [0, 1].
        max_batch: The largest accepted number of instances (from the policy).

    Returns:
        A new C-contiguous float32 array of shape (N, 64), 1 <= N <= max_batch, with every
        value finite and in [0, 1].

    Raises:
        InputValidationError: If the body is not of that form; the error names the field.
        ValueError: If ``max_batch`` is not a positive integer (a configuration error).
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    if isinstance(payload, dict):
        if "instances" not in payload:
            raise InputValidationError(
                "instances", 'is missing; send {"instances": [[64 numbers in [0, 1]], ...]}'
            )
        instances = payload["instances"]
    elif _is_sequence(payload) or isinstance(payload, np.ndarray):
        instances = payload
    else:
        raise InputValidationError(
            "body",
            f'expected a JSON object {{"instances": [...]}}, got {_describe(payload)}',
        )
    if isinstance(instances, np.ndarray):
        return _from_array(instances, max_batch)
    if not _is_sequence(instances):
        raise InputValidationError(
            "instances", f"expected a list of images, got {_describe(instances)}"
        )
    assert isinstance(instances, Sequence)
    if len(instances) == 0:
        raise InputValidationError("instances", "is empty; send at least one image")
    if len(instances) > max_batch:
        raise InputValidationError(
            "instances",
            f"batch of {len(instances)} exceeds the limit of {max_batch}; split the request",
        )
    rows = [_row(row, f"instances[{i}]") for i, row in enumerate(instances)]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), N_FEATURES)
