"""Save and load model weights safely: safetensors only, verified against the code.

An artifact is a safetensors file holding the DigitsNet state dict and string metadata
(``architecture``, ``hidden``, ``version``, ``defense``, ``format_version`` and
``weights_digest``). Loading never unpickles anything: it reads the bytes once, parses
the header, checks the metadata, checks that tensor names, shapes and dtypes are exactly
what :class:`~service.model.net.DigitsNet` expects, and recomputes the weights digest, so
flipped bytes anywhere in the file, truncation or a mismatched network all raise
:class:`~service.model.errors.ArtifactError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from service.model.errors import ArtifactError

if TYPE_CHECKING:
    import torch

    from service.model.net import DigitsNet

FORMAT_VERSION = "1"
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
REQUIRED_METADATA = ("architecture", "hidden", "version", "defense", "format_version")


@dataclass
class LoadedArtifact:
    """A verified model with its metadata and the sha256 digest of the file."""

    model: DigitsNet
    metadata: dict[str, str]
    digest: str
    size: int


def file_digest(path: Path | str) -> str:
    """Return ``sha256:<hex>`` of a file's bytes.

    Raises:
        ArtifactError: If the file cannot be read.
    """
    try:
        return f"sha256:{hashlib.sha256(Path(path).read_bytes()).hexdigest()}"
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from exc


def weights_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """Return a sha256 over tensor names, dtypes, shapes and little-endian bytes.

    Args:
        tensors: The state dict.

    Returns:
        ``sha256:<hex>``, independent of the file layout.
    """
    h = hashlib.sha256(b"ztml/weights/v1\n")
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes())
    return f"sha256:{h.hexdigest()}"


def save_model(model: DigitsNet, path: Path | str, *, metadata: Mapping[str, str]) -> str:
    """Write a model's weights to a safetensors file with string metadata.

    Args:
        model: The network to save.
        path: Target file (parent directories are created).
        metadata: At least ``version`` and ``defense``; ``architecture``, ``hidden``,
            ``format_version`` and ``weights_digest`` are filled in.

    Returns:
        The ``sha256:<hex>`` digest of the written file.

    Raises:
        ArtifactError: If the metadata is not all strings or the file cannot be written.
    """
    from safetensors.torch import save_file

    from service.model.net import ARCHITECTURE, hidden_to_text

    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ArtifactError("artifact metadata keys and values must all be strings")
    for key in ("version", "defense"):
        if not metadata.get(key):
            raise ArtifactError(f"artifact metadata needs a non-empty {key!r}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        **metadata,
        "architecture": ARCHITECTURE,
        "hidden": hidden_to_text(model.hidden),
        "format_version": FORMAT_VERSION,
        "weights_digest": weights_digest(tensors),
    }
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(target)
    except OSError as exc:
        raise ArtifactError(f"cannot write artifact {target}: {exc.strerror or exc}") from exc
    return file_digest(target)


def _read_header(data: bytes, where: str) -> dict[str, str]:
    if len(data) < 8:
        raise ArtifactError(f"{where} is truncated: {len(data)} bytes, not a safetensors file")
    size = int.from_bytes(data[:8], "little")
    if size <= 0 or 8 + size > len(data):
        raise ArtifactError(
            f"{where} is truncated or corrupt: header claims {size} bytes, file has {len(data)}"
        )
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{where} has a corrupt safetensors header: {exc}") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ArtifactError(f"{where} has no string metadata; it was not written by ztml")
    missing = [k for k in (*REQUIRED_METADATA, "weights_digest") if not meta.get(k)]
    if missing:
        raise ArtifactError(f"{where} metadata lacks {', '.join(missing)}")
    return dict(meta)


def load_artifact(path: Path | str) -> LoadedArtifact:
    """Load and verify a model artifact (safetensors only, never pickle).

    Args:
        path: The ``model.safetensors`` file.

    Returns:
        The model in eval mode, its metadata, and the file's digest and size.

    Raises:
        ArtifactError: If the file is missing, too large, truncated, corrupt, tampered
            with, or its tensors do not match the DigitsNet class.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    from service.model.data import N_CLASSES, N_FEATURES
    from service.model.net import ARCHITECTURE, DigitsNet, hidden_from_text

    source = Path(path)
    where = f"artifact {source}"
    try:
        if source.stat().st_size > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"{where} is larger than {MAX_ARTIFACT_BYTES} bytes; refusing it")
        data = source.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"cannot read {where}: it does not exist") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {where}: {exc.strerror or exc}") from exc
    meta = _read_header(data, where)
    if meta["architecture"] != ARCHITECTURE:
        raise ArtifactError(f"{where} is a {meta['architecture']!r}, expected {ARCHITECTURE!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ArtifactError(
            f"{where} has format version {meta['format_version']!r}; this ztml reads "
            f"{FORMAT_VERSION!r} (re-train or re-save the model)"
        )
    try:
        hidden = hidden_from_text(meta["hidden"])
        widths = [N_FEATURES, *hidden, N_CLASSES]
        n_params = sum((a + 1) * b for a, b in pairwise(widths))
        if 4 * n_params > len(data):
            raise ArtifactError(
                f"{where} metadata describes a {meta['hidden']} network of {n_params} "
                f"parameters, more than the file's {len(data)} bytes can hold"
            )
        model = DigitsNet(hidden)
        tensors = load_bytes(data)
    except (ValueError, SafetensorError) as exc:
        raise ArtifactError(f"{where} is corrupt: {exc}") from exc
    expected = model.state_dict()
    if set(tensors) != set(expected):
        extra, lacking = sorted(set(tensors) - set(expected)), sorted(set(expected) - set(tensors))
        raise ArtifactError(
            f"{where} does not match DigitsNet: unexpected tensors {extra}, missing {lacking}"
        )
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise ArtifactError(
                f"{where} tensor {name!r} is {got.dtype}{tuple(got.shape)}, DigitsNet "
                f"expects {want.dtype}{tuple(want.shape)}"
            )
    if weights_digest(tensors) != meta["weights_digest"]:
        raise ArtifactError(
            f"{where} is corrupt or tampered with: its weights do not match the digest "
            "recorded in its metadata"
        )
    model.load_state_dict(tensors, strict=True)
    model.eval()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    return LoadedArtifact(model, meta, digest, len(data))


def load_model(path: Path | str) -> DigitsNet:
    """Load a verified DigitsNet from a safetensors artifact (see :func:`load_artifact`).

    Raises:
        ArtifactError: On any corrupt, truncated, tampered or mismatched file.
    """
    return load_artifact(path).model
