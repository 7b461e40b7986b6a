"""The model contract: ``ztml-model.json``, what a model package promises about itself.

A package directory holds the contract, the weights (safetensors), the Python file that
builds the architecture and the validation and test data. The contract says how to build
the network (``architecture.entry_point`` and its ``arguments``), what one instance looks
like (``input``: modality, shape, dtype, per-feature bounds in raw units, optional feature
names, the image layout), how raw values are preprocessed before the network, the class
labels, and where the data files are. :func:`parse_contract` checks all of it strictly:
unknown keys, wrong types and impossible values are refused with a
:class:`~service.model.errors.ContractError` whose message starts with the JSON path of the
field, e.g. ``input.bounds.min[3]: must be below input.bounds.max[3] (7.0 >= 5.0)``.

The contract's digest (:meth:`ModelContract.digest`) is the sha256 of the RFC 8785
canonical form of :meth:`ModelContract.document`; the ledger's register record carries
both, so what a server enforces is exactly what was registered.
"""

from __future__ import annotations

import copy
import hashlib
import json
import keyword
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.model.errors import ContractError

CONTRACT_NAME = "ztml-model.json"
CONTRACT_FORMAT = "ztml-model/v1"
#: Largest number of values in one instance (``prod(input.shape)``).
MAX_FEATURES = 1_000_000
MAX_CONTRACT_BYTES = 64 * 1024 * 1024
MAX_LABELS = 100_000
MAX_DIMENSIONS = 8
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
ENTRY_POINT_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)

Modality = Literal["image", "tabular"]
FloatVector = npt.NDArray[np.float64]

_TOP = frozenset(
    {
        "format",
        "name",
        "version",
        "architecture",
        "weights",
        "input",
        "preprocessing",
        "labels",
        "data",
    }
)
_TOP_REQUIRED = _TOP - {"preprocessing"}
_ARCHITECTURE = frozenset({"entry_point", "arguments"})
_INPUT = frozenset({"modality", "shape", "dtype", "bounds", "features", "image_layout"})
_INPUT_REQUIRED = frozenset({"modality", "shape", "dtype", "bounds"})
_DATA = frozenset({"validation", "test"})


def _fail(where: str, problem: str) -> ContractError:
    return ContractError(f"{where}: {problem}")


def _object(value: Any, where: str, *, allowed: frozenset[str], required: frozenset[str]) -> dict:
    if not isinstance(value, dict):
        raise _fail(where or "contract", f"must be a JSON object, got {type(value).__name__}")
    prefix = f"{where}." if where else ""
    for key in value:
        if not isinstance(key, str) or key not in allowed:
            raise _fail(
                f"{prefix}{key}",
                f"unknown field; allowed fields are {', '.join(sorted(allowed))}",
            )
    for key in sorted(required):
        if key not in value:
            raise _fail(f"{prefix}{key}", "is required but missing")
    return value


def _string(
    value: Any, where: str, *, pattern: re.Pattern[str] | None = None, hint: str = ""
) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, "must be a non-empty string")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(where, f"{value!r} is not allowed; {hint}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"must be a number, got {json.dumps(value)[:40]}")
    if not math.isfinite(value):
        raise _fail(where, "must be a finite number")
    return float(value)


def _positive_ints(value: Any, where: str, *, length: int | None = None) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(where, "must be a non-empty list of positive integers")
    if length is not None and len(value) != length:
        raise _fail(where, f"must have {length} entries, has {len(value)}")
    if len(value) > MAX_DIMENSIONS:
        raise _fail(where, f"has {len(value)} dimensions; at most {MAX_DIMENSIONS} are allowed")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise _fail(f"{where}[{i}]", f"must be a positive integer, got {json.dumps(item)[:40]}")
    return tuple(value)


def _vector(value: Any, where: str, d: int) -> FloatVector:
    """A number broadcast to ``d`` features, or a list of exactly ``d`` finite numbers."""
    if isinstance(value, list):
        if len(value) != d:
            raise _fail(where, f"must have one entry per feature ({d}), has {len(value)}")
        return np.array([_number(v, f"{where}[{i}]") for i, v in enumerate(value)], np.float64)
    return np.full(d, _number(value, where), np.float64)


def _strings(value: Any, where: str, *, minimum: int, maximum: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not minimum <= len(value) <= maximum:
        raise _fail(where, f"must be a list of {minimum} to {maximum} strings")
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _fail(f"{where}[{i}]", "must be a non-empty string")
        if item in seen:
            raise _fail(f"{where}[{i}]", f"{item!r} repeats {where}[{seen[item]}]; make it unique")
        seen[item] = i
    return tuple(value)


def _relative_path(value: Any, where: str) -> str:
    text = _string(value, where)
    path = PurePosixPath(text)
    if "\\" in text or path.is_absolute() or ".." in path.parts or text.startswith("~"):
        raise _fail(
            where,
            f"{text!r} must be a relative path inside the package directory "
            "(no leading '/', no '..', '/' as separator)",
        )
    if not path.name.endswith(".safetensors"):
        raise _fail(where, f"{text!r} must be a .safetensors file (ztml never unpickles)")
    return path.as_posix()


@dataclass(frozen=True, eq=False)
class ModelContract:
    """A parsed, validated model contract (see :func:`parse_contract`).

    ``lower``/``upper`` are the per-feature bounds in raw units (float64, shape ``(d,)``,
    scalars broadcast). Two contracts are equal when their digests are.
    """

    name: str
    version: str
    entry_point: str
    arguments: dict[str, Any]
    weights: str
    modality: Modality
    shape: tuple[int, ...]
    dtype: Literal["float32"]
    lower: FloatVector
    upper: FloatVector
    features: tuple[str, ...] | None
    image_layout: tuple[int, int, int] | None
    preprocessing: dict[str, Any]
    labels: tuple[str, ...]
    data: dict[str, str]
    _document: dict[str, Any] = field(repr=False)

    @property
    def n_features(self) -> int:
        """The number of values in one instance, ``d = prod(shape)``."""
        return math.prod(self.shape)

    @property
    def n_classes(self) -> int:
        """The number of class labels (the network's logits)."""
        return len(self.labels)

    def feature_name(self, index: int) -> str | None:
        """Return the declared name of feature ``index`` (flat), or None."""
        return self.features[index] if self.features is not None else None

    def document(self) -> dict[str, Any]:
        """Return the contract as a JSON document (a copy; defaults filled in)."""
        return copy.deepcopy(self._document)

    def digest(self) -> str:
        """Return ``sha256:<hex>`` of the RFC 8785 canonical form of :meth:`document`."""
        import rfc8785

        return f"sha256:{hashlib.sha256(rfc8785.dumps(self._document)).hexdigest()}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelContract) and self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())


def _parse_input(value: Any) -> tuple[Any, ...]:
    spec = _object(value, "input", allowed=_INPUT, required=_INPUT_REQUIRED)
    modality = spec["modality"]
    if modality not in ("image", "tabular"):
        raise _fail("input.modality", f"must be 'image' or 'tabular', got {json.dumps(modality)}")
    shape = _positive_ints(spec["shape"], "input.shape")
    d = math.prod(shape)
    if d > MAX_FEATURES:
        raise _fail("input.shape", f"has {d} values per instance; at most {MAX_FEATURES}")
    if spec["dtype"] != "float32":
        raise _fail(
            "input.dtype",
            f"must be 'float32' (the only dtype supported), got {json.dumps(spec['dtype'])}",
        )
    bounds = _object(
        spec["bounds"],
        "input.bounds",
        allowed=frozenset({"min", "max"}),
        required=frozenset({"min", "max"}),
    )
    lower = _vector(bounds["min"], "input.bounds.min", d)
    upper = _vector(bounds["max"], "input.bounds.max", d)
    for i in np.flatnonzero(~(lower < upper)):
        at = f"[{i}]" if isinstance(bounds["min"], list) or isinstance(bounds["max"], list) else ""
        raise _fail(
            f"input.bounds.min{at}",
            f"must be below input.bounds.max{at} ({lower[i]} >= {upper[i]})",
        )
    if not np.all(np.isfinite(upper - lower)):
        raise _fail("input.bounds", "the range max - min must be finite for every feature")
    features = None
    if "features" in spec:
        features = _strings(spec["features"], "input.features", minimum=d, maximum=d)
    layout: tuple[int, int, int] | None = None
    if "image_layout" in spec:
        if modality != "image":
            raise _fail("input.image_layout", "is only for modality 'image'; remove it")
        c, h, w = _positive_ints(spec["image_layout"], "input.image_layout", length=3)
        if c * h * w != d:
            raise _fail(
                "input.image_layout",
                f"C*H*W = {c * h * w} must equal the values per instance prod(input.shape) = {d}",
            )
        layout = (c, h, w)
    elif modality == "image":
        raise _fail("input.image_layout", "is required for modality 'image': give [C, H, W]")
    return modality, shape, lower, upper, features, layout


def _parse_preprocessing(value: Any, d: int) -> dict[str, Any]:
    spec = _object(
        value,
        "preprocessing",
        allowed=frozenset({"kind", "mean", "std"}),
        required=frozenset({"kind"}),
    )
    if spec["kind"] == "none":
        _object(spec, "preprocessing", allowed=frozenset({"kind"}), required=frozenset())
        return {"kind": "none"}
    if spec["kind"] != "standardize":
        raise _fail(
            "preprocessing.kind", f"must be 'none' or 'standardize', got {json.dumps(spec['kind'])}"
        )
    for key in ("mean", "std"):
        if key not in spec:
            raise _fail(f"preprocessing.{key}", "is required for kind 'standardize'")
        if not isinstance(spec[key], list):
            raise _fail(f"preprocessing.{key}", f"must be a list of {d} numbers")
    mean = _vector(spec["mean"], "preprocessing.mean", d)
    std = _vector(spec["std"], "preprocessing.std", d)
    for i in np.flatnonzero(~(std > 0)):
        raise _fail(f"preprocessing.std[{i}]", f"must be above 0, got {std[i]}")
    return {"kind": "standardize", "mean": mean.tolist(), "std": std.tolist()}


def parse_contract(doc: object) -> ModelContract:
    """Validate a contract document and return the contract.

    Args:
        doc: The parsed JSON of ``ztml-model.json``.

    Returns:
        The contract.

    Raises:
        ContractError: Naming the first field that is unknown, missing or malformed.
    """
    top = _object(doc, "", allowed=_TOP, required=_TOP_REQUIRED)
    if top["format"] != CONTRACT_FORMAT:
        raise _fail("format", f"must be {CONTRACT_FORMAT!r}, got {json.dumps(top['format'])}")
    name = _string(
        top["name"],
        "name",
        pattern=NAME_RE,
        hint="use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    )
    version = _string(
        top["version"],
        "version",
        pattern=VERSION_RE,
        hint="use letters, digits, '.', '_', '+' or '-' (e.g. 1.0.0)",
    )
    arch = _object(
        top["architecture"],
        "architecture",
        allowed=_ARCHITECTURE,
        required=frozenset({"entry_point"}),
    )
    entry_point = _string(
        arch["entry_point"],
        "architecture.entry_point",
        pattern=ENTRY_POINT_RE,
        hint="write 'module:function' (e.g. 'model:build' for build() in model.py)",
    )
    module = entry_point.split(":")[0]
    if any(keyword.iskeyword(part) for part in module.split(".")):
        raise _fail("architecture.entry_point", f"{module!r} uses a Python keyword as a name")
    arguments = arch.get("arguments", {})
    if not isinstance(arguments, dict):
        raise _fail("architecture.arguments", "must be a JSON object of keyword arguments")
    for key in arguments:
        if not key.isidentifier() or keyword.iskeyword(key):
            raise _fail(f"architecture.arguments.{key}", "is not a valid keyword argument name")
    weights = _relative_path(top["weights"], "weights")
    if "/" in weights:
        raise _fail(
            "weights",
            f"{weights!r} must be a file in the package's top directory (its OMS bundle "
            "model.sig lies beside it); move it there",
        )
    modality, shape, lower, upper, features, layout = _parse_input(top["input"])
    d = math.prod(shape)
    preprocessing = _parse_preprocessing(top.get("preprocessing", {"kind": "none"}), d)
    labels = _strings(top["labels"], "labels", minimum=2, maximum=MAX_LABELS)
    data_spec = _object(top["data"], "data", allowed=_DATA, required=_DATA)
    data = {key: _relative_path(data_spec[key], f"data.{key}") for key in sorted(_DATA)}
    document = copy.deepcopy(top)
    document["architecture"] = {"entry_point": entry_point, "arguments": copy.deepcopy(arguments)}
    document["preprocessing"] = preprocessing
    try:
        import rfc8785

        rfc8785.dumps(document)
    except (ValueError, TypeError) as exc:
        raise _fail("architecture.arguments", f"cannot be canonicalized as JSON: {exc}") from exc
    lower.setflags(write=False)
    upper.setflags(write=False)
    return ModelContract(
        name=name,
        version=version,
        entry_point=entry_point,
        arguments=copy.deepcopy(arguments),
        weights=weights,
        modality=modality,
        shape=shape,
        dtype="float32",
        lower=lower,
        upper=upper,
        features=features,
        image_layout=layout,
        preprocessing=preprocessing,
        labels=labels,
        data=data,
        _document=document,
    )


def _refuse_constant(text: str) -> float:
    raise ValueError(f"{text} is not a finite number; JSON has no NaN or Infinity")


def read_contract(path: Path) -> ModelContract:
    """Read and validate ``ztml-model.json``.

    Args:
        path: The contract file.

    Returns:
        The contract.

    Raises:
        ContractError: If the file is missing, too large, not JSON or malformed.
    """
    source = Path(path)
    try:
        if source.stat().st_size > MAX_CONTRACT_BYTES:
            raise ContractError(f"{source}: larger than {MAX_CONTRACT_BYTES} bytes; refusing it")
        raw = source.read_bytes()
    except FileNotFoundError:
        raise ContractError(
            f"{source}: does not exist; a model package needs a {CONTRACT_NAME} contract"
        ) from None
    except OSError as exc:
        raise ContractError(f"{source}: cannot be read: {exc}") from exc
    return load_contract(raw, source)


def load_contract(raw: bytes, source: Path) -> ModelContract:
    """Validate the bytes of ``ztml-model.json`` read from ``source``.

    Raises:
        ContractError: If they are too large, not UTF-8 JSON or a malformed contract.
    """
    if len(raw) > MAX_CONTRACT_BYTES:
        raise ContractError(f"{source}: larger than {MAX_CONTRACT_BYTES} bytes; refusing it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"{source}: cannot be read: {exc}") from exc
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ContractError(f"{source}: is not valid JSON: {exc}") from exc
    try:
        return parse_contract(doc)
    except ContractError as exc:
        raise ContractError(f"{exc} (in {source})") from None


def weights_path(model_path: Path) -> Path:
    """Return the weights file a model path names (what the ledger's digest is of).

    A model package directory names its contract's ``weights``; a directory without a
    contract holds the built-in digits model (``model.safetensors``); a file is itself.

    Raises:
        ContractError: the package's contract cannot be read.
    """
    if not model_path.is_dir():
        return model_path
    contract = model_path / CONTRACT_NAME
    if not contract.exists():
        return model_path / "model.safetensors"
    return model_path / read_contract(contract).weights


#: The contract of the built-in digits MLP (a directory without ``ztml-model.json``).
DIGITS_CONTRACT: ModelContract = parse_contract(
    {
        "format": CONTRACT_FORMAT,
        "name": "digits",
        "version": "1",
        "architecture": {"entry_point": "service.model.net:DigitsNet", "arguments": {}},
        "weights": "model.safetensors",
        "input": {
            "modality": "image",
            "shape": [64],
            "dtype": "float32",
            "bounds": {"min": 0.0, "max": 1.0},
            "image_layout": [1, 8, 8],
        },
        "preprocessing": {"kind": "none"},
        "labels": [str(i) for i in range(10)],
        "data": {"validation": "data/validation.safetensors", "test": "data/test.safetensors"},
    }
)
