"""Strict validation of prediction request bodies, for any model contract.

A request carries ``{"instances": [...]}``: a batch of instances of the model's declared
input. Each instance is either flat (``d`` numbers, ``d`` the product of the contract's
shape) or nested in the declared shape; an image may also be nested as its layout, ``H``
lists of ``W`` numbers when it has one channel, or ``C`` lists of ``H`` lists of ``W``.
Every value must be a finite number within the contract's bounds for its feature (for the
built-in digits model, [0, 1] everywhere). Anything else is refused with an
:class:`InputValidationError` that names the offending field, and the feature when the
contract names its features, so a client can fix its request. The batch size is checked
before any instance is looked at, so an oversized body costs no per-value work.

Values are returned in RAW units, as sent; mapping them to the unit interval is the
served model's job.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from service.model.contract import DIGITS_CONTRACT
from service.sanitizer.errors import InputValidationError, PayloadTooLargeError

if TYPE_CHECKING:
    from service.model.contract import ModelContract

N_FEATURES = 64
IMAGE_SIDE = 8
VALUE_MIN = 0.0
VALUE_MAX = 1.0
ROW_HINT = "send 64 numbers in [0, 1] (a flattened 8x8 image) or 8 lists of 8 numbers"
#: The deepest nesting of JSON arrays and objects a body may have (a valid digits body has
#: 3, or 4 with 8x8 images); :func:`max_json_depth` gives a contract's limit.
MAX_JSON_DEPTH = 8

# Escapes (only valid inside strings) go first, then everything but brackets and quotes;
# what is left of each string, quote to quote (or to the end), then goes too.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_STRING = re.compile(rb'"[^"]*(?:"|\Z)')
_NESTING = np.zeros(256, dtype=np.int64)
_NESTING[list(b"[{")] = 1
_NESTING[list(b"]}")] = -1


@dataclass(frozen=True)
class _Spec:
    """What :func:`parse_instances` needs of a contract, computed once per contract."""

    d: int
    nested: tuple[tuple[int, ...], ...]  # accepted nested instance shapes (2 or more dims)
    lower: npt.NDArray[np.float64]
    upper: npt.NDArray[np.float64]
    lower_list: list[float]
    upper_list: list[float]
    uniform: tuple[float, float] | None  # (lo, hi) when every feature has the same bounds
    names: tuple[str, ...] | None
    image: bool
    hint: str
    noun: str
    shapes: frozenset[tuple[int, ...]]  # every accepted instance shape, flat included
    ndims: frozenset[int]

    def bounds_text(self, j: int) -> str:
        """Return feature ``j``'s bounds as ``[lo, hi]``."""
        return f"[{_bound(self.lower_list[j])}, {_bound(self.upper_list[j])}]"

    def shapes_text(self) -> str:
        """Return the accepted array shapes, e.g. ``(N, 64) or (N, 8, 8)``."""
        shapes = [(self.d,), *self.nested]
        texts = ["(N, " + ", ".join(str(n) for n in s) + ")" for s in shapes]
        return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]


def _bound(x: float) -> str:
    return f"{x:.10g}"


def _build_spec(contract: ModelContract) -> _Spec:
    d = contract.n_features
    lower = np.ascontiguousarray(contract.lower, dtype=np.float64).reshape(d)
    upper = np.ascontiguousarray(contract.upper, dtype=np.float64).reshape(d)
    if not (np.isfinite(lower).all() and np.isfinite(upper).all() and (lower <= upper).all()):
        raise ValueError(
            f"contract {contract.name}: input bounds must be finite with min <= max per feature"
        )
    uniform = None
    if d and (lower == lower[0]).all() and (upper == upper[0]).all():
        uniform = (float(lower[0]), float(upper[0]))
    nested: list[tuple[int, ...]] = []
    shape = tuple(int(n) for n in contract.shape)
    if len(shape) > 1:
        nested.append(shape)
    image = contract.modality == "image"
    layout = contract.image_layout if image else None
    if layout is not None:
        c, h, w = (int(n) for n in layout)
        if c == 1 and (h, w) not in nested:
            nested.append((h, w))
        if (c, h, w) not in nested:
            nested.append((c, h, w))
    in_range = f" in [{_bound(uniform[0])}, {_bound(uniform[1])}]" if uniform else ""
    if layout is not None:
        c, h, w = layout
        if c == 1:
            hint = (
                f"send {d} numbers{in_range} (a flattened {h}x{w} image) or {h} lists of "
                f"{w} numbers"
            )
        else:
            hint = (
                f"send {d} numbers{in_range} (a flattened {c}x{h}x{w} image) or {c} lists "
                f"of {h} lists of {w} numbers"
            )
    else:
        hint = f"send {d} numbers{in_range}, one per feature in the contract's order"
        if len(shape) > 1:
            hint += f", or nested in the shape {list(shape)}"
    return _Spec(
        d=d,
        nested=tuple(nested),
        lower=lower,
        upper=upper,
        lower_list=[float(v) for v in lower],
        upper_list=[float(v) for v in upper],
        uniform=uniform,
        names=contract.features,
        image=image,
        hint=hint,
        noun="image" if image else "instance",
        shapes=frozenset({(d,), *nested}),
        ndims=frozenset({1, *(len(s) for s in nested)}),
    )


_DIGITS_SPEC = _build_spec(DIGITS_CONTRACT)
# Specs of other contracts, by identity (the contract is kept so its id is not reused).
_SPECS: dict[int, tuple[ModelContract, _Spec]] = {}


def _spec(contract: ModelContract) -> _Spec:
    if contract is DIGITS_CONTRACT:
        return _DIGITS_SPEC
    cached = _SPECS.get(id(contract))
    if cached is not None and cached[0] is contract:
        return cached[1]
    spec = _build_spec(contract)
    if len(_SPECS) > 64:
        _SPECS.clear()
    _SPECS[id(contract)] = (contract, spec)
    return spec


def max_json_depth(contract: ModelContract = DIGITS_CONTRACT) -> int:
    """Return the nesting limit for bodies sent to a model with this contract.

    A body ``{"instances": [instance, ...]}`` nests two levels plus the instance's own
    nesting (1 for a flat instance, 3 for ``C`` lists of ``H`` lists of ``W`` numbers).
    The limit is :data:`MAX_JSON_DEPTH` unless a contract's deepest accepted instance
    needs more.

    Args:
        contract: The served model's contract.

    Returns:
        The limit to pass to :func:`check_json_depth`.
    """
    deepest = max((len(s) for s in _spec(contract).nested), default=1)
    return max(MAX_JSON_DEPTH, 2 + deepest)


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
        limit: The deepest accepted nesting (``{"instances": [[...]]}`` is 3 deep); see
            :func:`max_json_depth` for a contract's limit.

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


def _value(value: object, field: str, j: int, spec: _Spec) -> float:
    """Return one value as a float, or raise naming the field (and the feature).

    The slow path of every value: the callers accept in-bounds Python floats themselves
    and send everything else here.
    """
    lo, hi = spec.lower_list[j], spec.upper_list[j]
    feature = spec.names[j] if spec.names is not None else None
    bounds = spec.bounds_text(j)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InputValidationError(
            field, f"expected a number in {bounds}, got {_describe(value)}", feature=feature
        )
    if isinstance(value, numbers.Integral):
        integer = int(value)
        if not lo <= integer <= hi:
            shown = str(integer) if abs(integer) < 10**12 else "a very large integer"
            raise InputValidationError(field, f"value {shown} is outside {bounds}", feature=feature)
        return float(integer)
    number = float(value)
    if not math.isfinite(number):
        raise InputValidationError(
            field,
            f"value {number} is not a finite number; NaN and Infinity are not accepted",
            feature=feature,
        )
    if not lo <= number <= hi:
        if spec.image:
            message = f"value {number:.6g} is outside {bounds}; scale pixels to {bounds}"
        else:
            shown = f"{number:.6g}"
            if float(shown) != number and shown in (_bound(lo), _bound(hi)):
                shown = f"{number:.17g}"
            message = f"value {shown} is outside {bounds}"
        raise InputValidationError(field, message, feature=feature)
    return number


def _is_sequence(value: object) -> bool:
    return isinstance(value, list | tuple)


def _flat(row: Sequence[object], field: str, offset: int, spec: _Spec) -> list[float | int]:
    """Validate the values of one innermost list starting at feature ``offset``.

    In-bounds Python floats and ints (what JSON decodes to) are kept as they are (the
    caller's float32 conversion takes both), and no field name is built for them;
    anything else goes through :func:`_value`, which accepts or names the problem.
    """
    uniform = spec.uniform
    if uniform is not None:
        lo, hi = uniform
        return [
            v
            if (type(v) is float or type(v) is int) and lo <= v <= hi
            else _value(v, f"{field}[{j}]", offset + j, spec)
            for j, v in enumerate(row)
        ]
    lower = spec.lower_list
    upper = spec.upper_list
    return [
        v
        if (type(v) is float or type(v) is int) and lower[offset + j] <= v <= upper[offset + j]
        else _value(v, f"{field}[{j}]", offset + j, spec)
        for j, v in enumerate(row)
    ]


def _nested(
    value: Sequence[object],
    dims: tuple[int, ...],
    field: str,
    offset: int,
    spec: _Spec,
    out: list[float | int],
) -> None:
    """Validate an instance nested as ``dims``, appending its values to ``out``."""
    if len(value) != dims[0]:
        unit = "values" if len(dims) == 1 else "lists"
        raise InputValidationError(
            field, f"has {len(value)} {unit}, expected {dims[0]}; {spec.hint}"
        )
    if len(dims) == 1:
        out.extend(_flat(value, field, offset, spec))
        return
    stride = math.prod(dims[1:])
    for i, sub in enumerate(value):
        if not _is_sequence(sub):
            raise InputValidationError(
                f"{field}[{i}]", f"expected a list, got {_describe(sub)}; {spec.hint}"
            )
        assert isinstance(sub, list | tuple)
        _nested(sub, dims[1:], f"{field}[{i}]", offset + i * stride, spec, out)


def _depth(value: object) -> int:
    depth = 0
    while _is_sequence(value):
        assert isinstance(value, list | tuple)
        depth += 1
        if not value:
            break
        value = value[0]
    return depth


def _row(row: object, field: str, spec: _Spec) -> list[float | int]:
    """Validate one instance (flat or nested) and return its ``d`` values."""
    if not _is_sequence(row):
        raise InputValidationError(field, f"expected a list, got {_describe(row)}; {spec.hint}")
    assert isinstance(row, list | tuple)
    n = len(row)
    if spec.nested and n != spec.d and all(_is_sequence(r) for r in row):
        candidates = [s for s in spec.nested if s[0] == n]
        if candidates:
            depth = _depth(row)
            dims = next((s for s in candidates if len(s) == depth), candidates[0])
            values: list[float | int] = []
            _nested(row, dims, field, 0, spec, values)
            return values
    if n != spec.d:
        raise InputValidationError(field, f"has {n} values, expected {spec.d}; {spec.hint}")
    return _flat(row, field, 0, spec)


def _from_array(
    array: npt.NDArray[np.generic], max_batch: int, spec: _Spec
) -> npt.NDArray[np.float32]:
    """Validate instances given as a numpy array."""
    if array.dtype.kind not in "iuf":
        raise InputValidationError(
            "instances", f"expected numbers, got an array of dtype {array.dtype}"
        )
    if array.ndim - 1 not in spec.ndims or array.shape[0] == 0:
        raise InputValidationError(
            "instances", f"expected shape {spec.shapes_text()} with N >= 1, got {array.shape}"
        )
    if array.shape[0] > max_batch:
        raise InputValidationError(
            "instances", f"batch of {array.shape[0]} exceeds the limit of {max_batch}; split it"
        )
    if array.shape[1:] not in spec.shapes:
        raise InputValidationError(
            "instances", f"expected shape {spec.shapes_text()}, got {array.shape}"
        )
    flat = array.reshape(array.shape[0], spec.d).astype(np.float64)
    if spec.uniform is not None:
        bad = ~np.isfinite(flat) | (flat < spec.uniform[0]) | (flat > spec.uniform[1])
    else:
        bad = ~np.isfinite(flat) | (flat < spec.lower) | (flat > spec.upper)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        _value(float(flat[i, j]), f"instances[{i}][{j}]", j, spec)
    return np.ascontiguousarray(flat, dtype=np.float32)


def parse_instances(
    payload: object, *, max_batch: int, contract: ModelContract = DIGITS_CONTRACT
) -> npt.NDArray[np.float32]:
    """Validate a decoded request body and return its instances as a float32 (N, d) array.

    Args:
        payload: The JSON-decoded body, ``{"instances": [...]}`` (other keys are left to
            the caller), or the instances themselves (a list or a numpy array). Each
            instance is ``d`` numbers or nested in the contract's shape (an image also as
            its layout), every value finite and within its feature's bounds.
        max_batch: The largest accepted number of instances (from the policy).
        contract: The served model's contract (default: the built-in digits model: 64
            numbers in [0, 1], or 8 lists of 8).

    Returns:
        A new C-contiguous float32 array of shape (N, d), 1 <= N <= max_batch, in RAW
        units, every value finite and within its feature's bounds.

    Raises:
        InputValidationError: If the body is not of that form; the error names the field
            (and the feature, when the contract names its features).
        ValueError: If ``max_batch`` is not a positive integer, or the contract's bounds
            are not finite (configuration errors).
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    spec = _spec(contract)
    if isinstance(payload, dict):
        if "instances" not in payload:
            in_range = ""
            if spec.uniform is not None:
                in_range = f" in [{_bound(spec.uniform[0])}, {_bound(spec.uniform[1])}]"
            raise InputValidationError(
                "instances",
                f'is missing; send {{"instances": [[{spec.d} numbers{in_range}], ...]}}',
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
        return _from_array(instances, max_batch, spec)
    if not _is_sequence(instances):
        raise InputValidationError(
            "instances", f"expected a list of {spec.noun}s, got {_describe(instances)}"
        )
    assert isinstance(instances, Sequence)
    if len(instances) == 0:
        raise InputValidationError("instances", f"is empty; send at least one {spec.noun}")
    if len(instances) > max_batch:
        raise InputValidationError(
            "instances",
            f"batch of {len(instances)} exceeds the limit of {max_batch}; split the request",
        )
    rows = [_row(row, f"instances[{i}]", spec) for i, row in enumerate(instances)]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), spec.d)
