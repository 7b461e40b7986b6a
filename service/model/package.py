"""Open a model to serve: a model package directory, or the built-in digits artifact.

A package directory holds ``ztml-model.json`` (:mod:`service.model.contract`), the weights
as safetensors, the Python file that builds the architecture and the validation and test
data. :func:`open_model` loads it the safe way:

- the entry point ``mod.sub:factory`` names a ``.py`` file inside the package directory
  (``mod/sub.py``); a name that is not an identifier, or a file that resolves outside the
  directory (a symlink), is refused. The file is compiled and run as a module under a name
  of its own (nothing is added to ``sys.path``, no module of the same name is replaced and
  no bytecode is written into the signed directory). It may import installed libraries,
  and other files of the package relatively (``from .layers import Block``,
  ``from .blocks import stem`` for ``blocks/stem.py``), which are found, checked and run
  the same way; ``factory(**arguments)`` must return an ``nn.Module``;
- the weights are read once (size-capped) and parsed by safetensors, never unpickled; the
  tensor names, shapes and dtypes must be exactly the module's state dict;
- one forward pass on a zero batch of shape ``(1, *shape)`` must give ``(1, n_classes)``
  logits;
- given the file digests an OMS bundle signs (what the deploy gate just verified), every
  file is held to them as it is read: the bytes parsed, compiled or loaded are exactly
  the signed ones, even if a file is replaced after the signature was checked;
- the data files hold ``x`` (``(N, *shape)`` float32 in raw units, within the bounds) and
  ``y`` (``(N,)`` int64 in ``[0, n_classes)``), checked when first read.

A directory without ``ztml-model.json`` is the built-in digits model: its network comes
from :func:`service.model.artifact.load_artifact`, its contract is
:data:`~service.model.contract.DIGITS_CONTRACT` and its data the digits splits.

Internally ztml works in unit space: ``u = (x - min) / (max - min)`` in ``[0, 1]^d``,
flattened to ``(N, d)``. :class:`UnitNetwork` maps unit inputs to logits, so attacks,
detectors and explanations differentiate through it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.model.contract import (
    CONTRACT_NAME,
    DIGITS_CONTRACT,
    MAX_CONTRACT_BYTES,
    ModelContract,
    load_contract,
)
from service.model.errors import ArtifactError, PackageError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Largest weights file a package may hold.
MAX_WEIGHTS_BYTES = 1024 * 1024 * 1024
#: Largest validation or test data file.
MAX_DATA_BYTES = 1024 * 1024 * 1024
#: Largest Python source file of an entry point.
MAX_SOURCE_BYTES = 4 * 1024 * 1024
WEIGHTS_NAME = "model.safetensors"

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Split = tuple[FloatArray, IntArray]

_module_ids = itertools.count()


def _unit_network_class() -> type[nn.Module]:
    from torch import nn

    class UnitNetwork(nn.Module):
        """Map unit inputs ``(N, d)`` in ``[0, 1]`` to the network's logits ``(N, classes)``.

        ``x = min + u * (max - min)``, reshaped to ``(N, *shape)``, preprocessed (standardized
        if the contract says so), then the network.
        """

        lower: torch.Tensor
        span: torch.Tensor
        mean: torch.Tensor
        std: torch.Tensor

        def __init__(self, network: nn.Module, contract: ModelContract) -> None:
            import torch

            super().__init__()
            self.network = network
            self.shape = contract.shape
            self.register_buffer("lower", torch.tensor(contract.lower, dtype=torch.float32))
            self.register_buffer(
                "span", torch.tensor(contract.upper - contract.lower, dtype=torch.float32)
            )
            # The built-in digits model's pixels are already unit values: no affine step.
            self.identity = bool((contract.lower == 0.0).all() and (contract.upper == 1.0).all())
            self.standardize = contract.preprocessing["kind"] == "standardize"
            if self.standardize:
                mean = torch.tensor(contract.preprocessing["mean"], dtype=torch.float32)
                std = torch.tensor(contract.preprocessing["std"], dtype=torch.float32)
                self.register_buffer("mean", mean)
                self.register_buffer("std", std)

        def forward(self, u: torch.Tensor) -> torch.Tensor:
            """Return the logits of a batch of unit inputs of shape ``(N, d)``."""
            x = u if self.identity else self.lower + u * self.span
            if self.standardize:
                x = (x - self.mean) / self.std
            return self.network(x.reshape(-1, *self.shape))

    return UnitNetwork


def unit_network(network: nn.Module, contract: ModelContract) -> nn.Module:
    """Wrap ``network`` (raw inputs) as a module on unit inputs (see :class:`UnitNetwork`).

    Args:
        network: The model's network on preprocessed inputs of shape ``(N, *shape)``.
        contract: Its contract (bounds, shape, preprocessing).

    Returns:
        The unit network, in eval mode.
    """
    module = _unit_network_class()(network, contract)
    module.eval()
    return module


@dataclass
class ServedModel:
    """A model opened for serving, with its contract and (lazily read) data.

    Attributes:
        path: The package (or digits artifact) directory.
        contract: The model's contract.
        network: The network on preprocessed raw inputs ``(N, *shape)``, eval mode, its
            parameters frozen.
        unit_network: ``(N, d)`` unit inputs -> logits.
        weights_path: The weights file.
        weights_digest: ``sha256:<hex>`` of the weights file's bytes (the ledger's
            model digest).
        weights_size: The weights file's size in bytes.
    """

    path: Path
    contract: ModelContract
    network: nn.Module
    unit_network: nn.Module
    weights_path: Path
    weights_digest: str
    weights_size: int
    _splits: Callable[[str], Split] = field(repr=False)
    _cache: dict[str, Split] = field(default_factory=dict, repr=False)

    @property
    def builtin(self) -> bool:
        """True for the built-in digits model (a directory without a contract file)."""
        return not (self.path / CONTRACT_NAME).is_file()

    def validation(self) -> Split:
        """Return the validation data: raw float32 ``(N, d)`` and int64 labels ``(N,)``.

        Raises:
            PackageError: If the data file is missing or does not fit the contract.
        """
        return self._split("validation")

    def test(self) -> Split:
        """Return the test data: raw float32 ``(N, d)`` and int64 labels ``(N,)``.

        Raises:
            PackageError: If the data file is missing or does not fit the contract.
        """
        return self._split("test")

    def _split(self, which: str) -> Split:
        if which not in self._cache:
            self._cache[which] = self._splits(which)
        x, y = self._cache[which]
        return x.copy(), y.copy()

    @functools.cached_property
    def _unit_bounds(self) -> bool:
        return bool((self.contract.lower == 0.0).all() and (self.contract.upper == 1.0).all())

    def to_unit(self, x_raw: npt.ArrayLike) -> FloatArray:
        """Map raw values ``(N, d)`` to unit space: ``(x - min) / (max - min)``.

        Values the sanitizer accepted are within the bounds; rounding can put one a hair
        outside [0, 1], so the result is clipped. Bounds of exactly [0, 1] (the digits
        model's pixels) need no arithmetic.
        """
        lower, upper = self.contract.lower, self.contract.upper
        if self._unit_bounds:
            return np.clip(np.asarray(x_raw, dtype=np.float32), 0.0, 1.0)
        x = np.asarray(x_raw, dtype=np.float64)
        return np.clip((x - lower) / (upper - lower), 0.0, 1.0).astype(np.float32)

    def from_unit(self, u: npt.ArrayLike) -> FloatArray:
        """Map unit values ``(N, d)`` back to raw units: ``min + u * (max - min)``."""
        unit = np.asarray(u, dtype=np.float64)
        span = self.contract.upper - self.contract.lower
        return (self.contract.lower + unit * span).astype(np.float32)


def _inside(root: Path, relative: str, where: str) -> Path:
    """Resolve ``relative`` under ``root``; refuse anything that ends up outside it."""
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise PackageError(
            f"{where}: {relative!r} resolves to {target}, outside the package directory "
            f"{base}; keep every file of the package inside it (no symlinks out)"
        )
    return target


def _read_capped(path: Path, limit: int, where: str) -> bytes:
    try:
        if not path.is_file():
            raise PackageError(f"{where}: {path} does not exist or is not a file")
        if path.stat().st_size > limit:
            raise PackageError(f"{where}: {path} is larger than {limit} bytes; refusing it")
        return path.read_bytes()
    except OSError as exc:
        raise PackageError(f"{where}: cannot read {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class _Files:
    """Reads a package's files, holding each to its signed digest when there are some.

    Attributes:
        root: The package directory (resolved).
        signed: ``{relative name: "sha256:<hex>"}`` from a verified OMS bundle, or None
            to read without that check (registration verifies the bundle itself).
    """

    root: Path
    signed: Mapping[str, str] | None

    def read(self, path: Path, limit: int, where: str) -> bytes:
        """Read ``path`` (at most ``limit`` bytes), checked against its signed digest."""
        if self.signed is None:
            return _read_capped(path, limit, where)
        return self.read_digested(path, limit, where)[0]

    def read_digested(self, path: Path, limit: int, where: str) -> tuple[bytes, str]:
        """Read ``path`` and return its bytes and ``sha256:<hex>``, checked when signed."""
        data = _read_capped(path, limit, where)
        actual = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if self.signed is None:
            return data, actual
        name = path.relative_to(self.root).as_posix()
        expected = self.signed.get(name)
        if expected is None:
            raise PackageError(
                f"{where}: {name} is not among the files the verified OMS signature covers; "
                f"sign the whole package directory ({self.root}) with `ztml model sign`"
            )
        if actual != expected:
            raise PackageError(
                f"{where}: {name} changed after its OMS signature was verified ({actual} != "
                f"{expected}); restore the signed file, or sign and register the package again"
            )
        return data, actual


def _load_tensors(data: bytes, where: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    try:
        return load_bytes(data)
    except (ValueError, SafetensorError, RuntimeError) as exc:
        raise PackageError(f"{where}: not a valid safetensors file: {exc}") from exc


class _SourceLoader(importlib.abc.Loader):
    """Runs one ``.py`` file of a package from the bytes its :class:`_Files` reads."""

    def __init__(self, files: _Files, path: Path | None, where: str) -> None:
        self.files, self.path, self.where = files, path, where

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        if self.path is None:  # a directory without __init__.py
            return
        source = self.files.read(self.path, MAX_SOURCE_BYTES, self.where)
        code = compile(source, str(self.path), "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 -- the package's own, OMS-signed code


class _PackageFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of opened packages, each under its own unique top-level name.

    ``_ztml_model_<n>.a.b`` is ``a/b.py`` (or ``a/b/__init__.py``) of package ``n``:
    a package's files import each other relatively (``from .layers import Block``);
    nothing is put on ``sys.path`` and no bytecode is written.
    """

    def __init__(self) -> None:
        self.packages: dict[str, _Files] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        top, _, rest = fullname.partition(".")
        files = self.packages.get(top)
        if files is None or not rest:
            return None
        relative = rest.replace(".", "/")
        where = "architecture.entry_point"
        directory = _inside(files.root, relative, where)
        if directory.is_dir():
            source: Path | None = None
            if (directory / "__init__.py").exists():
                source = _inside(files.root, f"{relative}/__init__.py", where)
            spec = importlib.util.spec_from_loader(
                fullname, _SourceLoader(files, source, where), is_package=True
            )
            if spec is not None:
                spec.submodule_search_locations = []
                spec.origin = str(source) if source is not None else None
            return spec
        source = _inside(files.root, f"{relative}.py", where)
        if not source.is_file():
            return None
        spec = importlib.util.spec_from_loader(
            fullname, _SourceLoader(files, source, where), origin=str(source)
        )
        if spec is not None:
            spec.has_location = True
        return spec


_finder = _PackageFinder()


def _import_entry_point(files: _Files, contract: ModelContract) -> Callable[..., Any]:
    """Import the entry point's module under a name of its own and return its factory."""
    where = "architecture.entry_point"
    module_path, _, attribute = contract.entry_point.partition(":")
    parts = module_path.split(".")
    if not all(p.isidentifier() for p in [*parts, attribute]):
        raise PackageError(f"{where}: {contract.entry_point!r} is not 'module:function'")
    source_path = _inside(files.root, "/".join(parts) + ".py", where)
    if not source_path.is_file():
        raise PackageError(f"{where}: {source_path} does not exist or is not a file")
    top = f"_ztml_model_{next(_module_ids)}"
    while top in sys.modules:  # never replace a module someone else imported
        top = f"_ztml_model_{next(_module_ids)}"
    root = types.ModuleType(top)
    root.__path__ = []
    root.__spec__ = importlib.machinery.ModuleSpec(top, None, is_package=True)
    root.__spec__.submodule_search_locations = []
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    _finder.packages[top] = files
    sys.modules[top] = root  # dataclasses and typing look their modules up here
    try:
        module = importlib.import_module(f"{top}.{module_path}")
    except PackageError:
        _forget(top)
        raise
    except Exception as exc:
        _forget(top)
        hint = ""
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        if missing and (files.root / (missing.replace(".", "/") + ".py")).is_file():
            hint = f"; files of the package import each other relatively: `from . import {missing}`"
        raise PackageError(
            f"{where}: running {source_path.name} failed: {type(exc).__name__}: {exc}{hint}"
        ) from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        _forget(top)
        raise PackageError(
            f"{where}: {source_path.name} defines no function {attribute!r}; define it or fix "
            "the entry point"
        )
    return factory


def _forget(top: str) -> None:
    """Drop a package whose code failed: its modules and its entry in the finder."""
    _finder.packages.pop(top, None)
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def _build_network(files: _Files, contract: ModelContract) -> nn.Module:
    from torch import nn

    factory = _import_entry_point(files, contract)
    try:
        network = factory(**contract.arguments)
    except Exception as exc:
        raise PackageError(
            f"architecture.arguments: {contract.entry_point}(**arguments) failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(network, nn.Module):
        raise PackageError(
            f"architecture.entry_point: {contract.entry_point} returned a "
            f"{type(network).__name__}, not a torch.nn.Module"
        )
    return network


def _load_weights(network: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise PackageError(
            f"{where}: tensor {missing[0]!r} is missing (the network has it; missing: "
            f"{', '.join(missing[:10])})"
        )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise PackageError(
            f"{where}: tensor {extra[0]!r} is not in the network's state dict (unexpected: "
            f"{', '.join(extra[:10])})"
        )
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise PackageError(
                f"{where}: tensor {name!r} is {got.dtype}{list(got.shape)}, the network "
                f"expects {want.dtype}{list(want.shape)}"
            )
    network.load_state_dict(tensors, strict=True)


def _check_forward(network: nn.Module, contract: ModelContract) -> None:
    import torch

    try:
        with torch.no_grad():
            out = network(torch.zeros((1, *contract.shape), dtype=torch.float32))
    except Exception as exc:
        raise PackageError(
            f"input.shape: the network fails on a zero batch of shape "
            f"{[1, *contract.shape]}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, contract.n_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PackageError(
            f"labels: the contract has {contract.n_classes} labels but the network returns "
            f"{got} for one instance, not [1, {contract.n_classes}] logits"
        )
    if not out.dtype.is_floating_point:
        raise PackageError(f"labels: the network returns {out.dtype} logits, not floats")


def _check_split(contract: ModelContract, tensors: dict[str, torch.Tensor], where: str) -> Split:
    import torch

    if set(tensors) != {"x", "y"}:
        raise PackageError(
            f"{where}: must hold exactly the tensors 'x' and 'y', holds {sorted(tensors)}"
        )
    x, y = tensors["x"], tensors["y"]
    if x.dtype != torch.float32 or tuple(x.shape[1:]) != contract.shape or x.shape[0] < 1:
        raise PackageError(
            f"{where}: 'x' is {x.dtype}{list(x.shape)}; it must be float32 (N, "
            f"{', '.join(map(str, contract.shape))}) with N >= 1, in raw units"
        )
    if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
        raise PackageError(
            f"{where}: 'y' is {y.dtype}{list(y.shape)}; it must be int64 ({x.shape[0]},)"
        )
    xs = x.reshape(x.shape[0], -1).numpy().astype(np.float32)
    ys = y.numpy().astype(np.int64)
    bad = ~np.isfinite(xs) | (xs < contract.lower) | (xs > contract.upper)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        name = contract.feature_name(j)
        label = f" ({name})" if name else ""
        raise PackageError(
            f"{where}: x[{i}][{j}]{label} = {xs[i, j]} is outside input.bounds "
            f"[{contract.lower[j]}, {contract.upper[j]}]; the data must be in raw units "
            "within the declared bounds"
        )
    wrong = (ys < 0) | (ys >= contract.n_classes)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise PackageError(
            f"{where}: y[{i}] = {ys[i]} is not a class index in [0, {contract.n_classes})"
        )
    return np.ascontiguousarray(xs), np.ascontiguousarray(ys)


def _open_package(root: Path, signed: Mapping[str, str] | None) -> ServedModel:
    files = _Files(root.resolve(), signed)
    contract_path = _inside(root, CONTRACT_NAME, CONTRACT_NAME)
    contract = load_contract(
        files.read(contract_path, MAX_CONTRACT_BYTES, CONTRACT_NAME), contract_path
    )
    weights_path = _inside(root, contract.weights, "weights")
    data, digest = files.read_digested(weights_path, MAX_WEIGHTS_BYTES, "weights")
    tensors = _load_tensors(data, f"weights ({contract.weights})")
    network = _build_network(files, contract)
    _load_weights(network, tensors, f"weights ({contract.weights})")
    network.eval()
    network.requires_grad_(False)
    _check_forward(network, contract)
    paths = {k: _inside(root, v, f"data.{k}") for k, v in contract.data.items()}
    for key, path in paths.items():
        if not path.is_file():
            raise PackageError(f"data.{key}: {contract.data[key]} does not exist in {root}")

    def splits(which: str) -> Split:
        where = f"data.{which} ({contract.data[which]})"
        raw = files.read(paths[which], MAX_DATA_BYTES, where)
        return _check_split(contract, _load_tensors(raw, where), where)

    return ServedModel(
        path=root,
        contract=contract,
        network=network,
        unit_network=unit_network(network, contract),
        weights_path=weights_path,
        weights_digest=digest,
        weights_size=len(data),
        _splits=splits,
    )


def _open_digits(root: Path, weights: Path) -> ServedModel:
    from service.model.artifact import load_artifact
    from service.model.data import load_splits

    try:
        loaded = load_artifact(weights)
    except ArtifactError as exc:
        raise PackageError(
            f"{exc} ({root} has no {CONTRACT_NAME}, so it is read as the built-in digits model)"
        ) from exc
    network = loaded.model
    network.requires_grad_(False)

    def splits(which: str) -> Split:
        s = load_splits()
        x, y = (s.x_val, s.y_val) if which == "validation" else (s.x_test, s.y_test)
        return np.array(x, dtype=np.float32), np.array(y, dtype=np.int64)

    return ServedModel(
        path=root,
        contract=DIGITS_CONTRACT,
        network=network,
        unit_network=unit_network(network, DIGITS_CONTRACT),
        weights_path=weights,
        weights_digest=loaded.digest,
        weights_size=loaded.size,
        _splits=splits,
    )


def open_model(path: Path | str, *, signed_files: Mapping[str, str] | None = None) -> ServedModel:
    """Open a model package directory, or the built-in digits artifact (dir or file).

    Args:
        path: A package directory (with ``ztml-model.json``), its contract file, or a
            digits artifact directory or its ``model.safetensors``.
        signed_files: The package files a verified OMS bundle signs, with their
            ``sha256:<hex>`` digests: each file read must be one of them, unchanged.
            The digits artifact is held to its verified digest by its caller instead.

    Returns:
        The model, its contract and its data.

    Raises:
        ContractError: The contract is malformed (the message names the field).
        PackageError: The code, weights or data do not fit the contract, a file differs
            from its signed digest, or the path is neither a package nor a digits artifact.
    """
    source = Path(path)
    if source.is_file():
        root = source.parent
        if (root / CONTRACT_NAME).is_file():
            return _open_package(root, signed_files)
        return _open_digits(root, source)
    if (source / CONTRACT_NAME).is_file():
        return _open_package(source, signed_files)
    if (source / WEIGHTS_NAME).is_file():
        return _open_digits(source, source / WEIGHTS_NAME)
    raise PackageError(
        f"{source}: is neither a model package (no {CONTRACT_NAME}) nor a digits artifact "
        f"directory (no {WEIGHTS_NAME})"
    )
