"""Streamed SHA-256 of model artifacts of any size."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from service.ledger.errors import ArtifactReadError

CHUNK_SIZE = 1024 * 1024  # 1 MiB


def hash_artifact(
    path: Path | str, *, progress: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """Return ``("sha256:<hex>", size)`` of a file, read in 1 MiB chunks.

    Memory use is constant: one reused 1 MiB buffer whatever the file size.

    Args:
        path: the artifact file.
        progress: called with the number of bytes read after each chunk.

    Raises:
        ArtifactReadError: the file is missing, a directory or unreadable.
    """
    path = Path(path)
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    size = 0
    try:
        with path.open("rb", buffering=0) as handle:
            while True:
                n = handle.readinto(buffer)
                if not n:
                    break
                digest.update(view[:n])
                size += n
                if progress is not None:
                    progress(n)
    except FileNotFoundError:
        raise ArtifactReadError(
            f"Artifact {path} does not exist. Pass the path of the model file "
            "(e.g. the model.safetensors written by `ztml model train`)."
        ) from None
    except IsADirectoryError:
        raise ArtifactReadError(f"Artifact {path} is a directory; pass the model file.") from None
    except OSError as err:
        raise ArtifactReadError(f"Cannot read artifact {path}: {err.strerror}.") from None
    return "sha256:" + digest.hexdigest(), size
