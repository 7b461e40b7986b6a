"""Safe artifacts: safetensors round trip, and corrupt files are refused with ArtifactError."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from service.model.artifact import file_digest, load_artifact, load_model, save_model
from service.model.errors import ArtifactError, ModelError
from service.model.net import DigitsNet


@pytest.fixture
def small_model() -> DigitsNet:
    torch.manual_seed(0)
    return DigitsNet((32, 16))


@pytest.fixture
def saved(tmp_path: Path, small_model: DigitsNet) -> Path:
    path = tmp_path / "model.safetensors"
    save_model(small_model, path, metadata={"version": "1.0.0", "defense": "pgd"})
    return path


def _header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def test_saved_artifact_reloads_to_identical_predictions(
    saved: Path, small_model: DigitsNet
) -> None:
    x = torch.rand(50, 64)
    loaded = load_artifact(saved)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), small_model(x))
    assert loaded.metadata["defense"] == "pgd"
    assert loaded.metadata["architecture"] == "digits-mlp"
    assert loaded.digest == file_digest(saved)
    assert not loaded.model.training


def test_session_model_reloads_to_identical_predictions(
    tmp_path: Path, trained: object, test_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = trained.adversarial  # type: ignore[attr-defined]
    path = tmp_path / "adv.safetensors"
    save_model(model, path, metadata={"version": "1", "defense": "pgd"})
    x, _ = test_data
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), model(x))


def test_flipped_byte_in_weights_is_rejected(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[_header_end(bytes(data)) + 100] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="tampered"):
        load_model(saved)


def test_flipped_byte_in_header_is_rejected(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[10] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_model(saved)


@pytest.mark.parametrize("keep", [0, 5, 200, -1])
def test_truncated_artifact_is_rejected(saved: Path, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    with pytest.raises(ArtifactError, match=r"truncated|corrupt"):
        load_model(saved)


def test_wrong_tensor_shape_is_rejected(tmp_path: Path, saved: Path) -> None:
    original = load_artifact(saved)
    tensors = dict(original.model.state_dict())
    tensors["layers.0.weight"] = torch.zeros(32, 63)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=original.metadata)
    with pytest.raises(ArtifactError, match=r"layers\.0\.weight.*expects"):
        load_model(bad)


def test_missing_tensor_is_rejected(tmp_path: Path, saved: Path) -> None:
    original = load_artifact(saved)
    tensors = {k: v for k, v in original.model.state_dict().items() if k != "layers.4.bias"}
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=original.metadata)
    with pytest.raises(ArtifactError, match="missing"):
        load_model(bad)


def test_other_architecture_is_rejected(tmp_path: Path, saved: Path) -> None:
    original = load_artifact(saved)
    bad = tmp_path / "bad.safetensors"
    save_file(
        dict(original.model.state_dict()),
        str(bad),
        metadata={**original.metadata, "architecture": "resnet"},
    )
    with pytest.raises(ArtifactError, match="resnet"):
        load_model(bad)


def test_safetensors_without_ztml_metadata_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "plain.safetensors"
    save_file(dict(DigitsNet((32, 16)).state_dict()), str(bad))
    with pytest.raises(ArtifactError, match="metadata"):
        load_model(bad)


def test_pickle_file_is_never_unpickled(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ArtifactError):
        load_model(bad)


def test_missing_artifact_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "absent.safetensors")


def test_header_claiming_more_than_the_file_is_rejected(tmp_path: Path) -> None:
    header = json.dumps({"__metadata__": {}}).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((len(header) + 1000).to_bytes(8, "little") + header)
    with pytest.raises(ArtifactError, match="truncated"):
        load_model(bad)


def test_metadata_claiming_a_huge_network_is_rejected_before_allocating(
    tmp_path: Path, saved: Path
) -> None:
    original = load_artifact(saved)
    bad = tmp_path / "bad.safetensors"
    save_file(
        dict(original.model.state_dict()),
        str(bad),
        metadata={**original.metadata, "hidden": "4096,4096,4096,4096"},
    )
    with pytest.raises(ArtifactError, match="more than the file"):
        load_model(bad)
