"""Streamed artifact hashing."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from service.ledger import hash_artifact
from service.ledger.artifact import CHUNK_SIZE
from service.ledger.errors import ArtifactReadError


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5]
)
def test_hash_matches_hashlib_across_chunk_boundaries(tmp_path: Path, size: int) -> None:
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    assert hash_artifact(path) == ("sha256:" + hashlib.sha256(data).hexdigest(), size)


def test_hash_matches_sha256sum(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x07" * (2 * CHUNK_SIZE + 123))
    expected = subprocess.run(
        ["sha256sum", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert hash_artifact(path)[0] == f"sha256:{expected}"


def test_progress_reports_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"x" * (CHUNK_SIZE + 10))
    seen: list[int] = []
    hash_artifact(path, progress=seen.append)
    assert sum(seen) == CHUNK_SIZE + 10


def test_missing_artifact_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArtifactReadError, match="does not exist"):
        hash_artifact(tmp_path / "absent.safetensors")


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactReadError, match="directory"):
        hash_artifact(tmp_path)
