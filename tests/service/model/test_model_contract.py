"""The model contract: strict parsing, errors that name the field, a stable digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rfc8785

from service.model.contract import DIGITS_CONTRACT, parse_contract, read_contract
from service.model.errors import ContractError
from tests.service.model.packages import contract_doc

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[key]
        del target[last]

    return edit


def test_a_valid_contract_parses_with_broadcast_bounds() -> None:
    doc = contract_doc()
    doc["input"]["bounds"] = {"min": 0, "max": [1, 2, 3, 4]}
    contract = parse_contract(doc)
    assert contract.name == "tiny-tabular"
    assert contract.shape == (4,)
    assert contract.n_features == 4
    assert contract.n_classes == 2
    assert contract.lower.tolist() == [0.0] * 4
    assert contract.upper.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert contract.entry_point == "model:build"
    assert contract.arguments == {"hidden": 8}
    assert contract.features == ("height", "tilt", "weight", "ratio")


def test_the_digest_is_the_sha256_of_the_canonical_document() -> None:
    contract = parse_contract(contract_doc())
    expected = hashlib.sha256(rfc8785.dumps(contract.document())).hexdigest()
    assert contract.digest() == f"sha256:{expected}"
    reordered = json.loads(json.dumps(contract_doc(), sort_keys=True))
    assert parse_contract(reordered).digest() == contract.digest()
    assert parse_contract(reordered) == contract


def test_defaults_are_filled_into_the_document() -> None:
    doc = contract_doc()
    del doc["preprocessing"]
    del doc["architecture"]["arguments"]
    document = parse_contract(doc).document()
    assert document["preprocessing"] == {"kind": "none"}
    assert document["architecture"]["arguments"] == {}


def test_the_digits_contract_describes_the_builtin_model() -> None:
    assert DIGITS_CONTRACT.name == "digits"
    assert DIGITS_CONTRACT.shape == (64,)
    assert DIGITS_CONTRACT.image_layout == (1, 8, 8)
    assert DIGITS_CONTRACT.labels == tuple(str(i) for i in range(10))
    assert np.all(DIGITS_CONTRACT.lower == 0) and np.all(DIGITS_CONTRACT.upper == 1)
    assert DIGITS_CONTRACT.preprocessing == {"kind": "none"}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set("colour", "red"), "colour: unknown field"),
        (_set("input.extra", 1), "input.extra: unknown field"),
        (_drop("labels"), "labels: is required"),
        (_drop("input.bounds"), "input.bounds: is required"),
        (_set("format", "ztml-model/v2"), "format: must be 'ztml-model/v1'"),
        (_set("name", "../evil"), "name: '../evil' is not allowed"),
        (_set("name", "a" * 64), "name: "),
        (_set("version", ""), "version: must be a non-empty string"),
        (_set("architecture.entry_point", "model.build"), "architecture.entry_point: "),
        (_set("architecture.entry_point", "../x:build"), "architecture.entry_point: "),
        (_set("architecture.entry_point", "class:build"), "architecture.entry_point: "),
        (_set("architecture.arguments", [1]), "architecture.arguments: must be a JSON object"),
        (_set("weights", "/etc/model.safetensors"), "weights: .* relative path"),
        (_set("weights", "model.pt"), "weights: .* .safetensors"),
        (_set("weights", "sub/model.safetensors"), "weights: .* top directory"),
        (_set("input.modality", "audio"), "input.modality: must be 'image' or 'tabular'"),
        (_set("input.shape", [4, 0]), r"input.shape\[1\]: must be a positive integer"),
        (_set("input.shape", [4.0]), r"input.shape\[0\]: must be a positive integer"),
        (_set("input.shape", [True]), r"input.shape\[0\]: must be a positive integer"),
        (_set("input.shape", []), "input.shape: must be a non-empty list"),
        (_set("input.shape", [1001, 1000]), "input.shape: has 1001000 values"),
        (_set("input.dtype", "float64"), "input.dtype: must be 'float32'"),
        (_set("input.bounds.min", [0, 0, 0]), "input.bounds.min: must have one entry per"),
        (_set("input.bounds.max", "1"), "input.bounds.max: must be a number"),
        (
            _set("input.bounds.min", [0.0, -5.0, 250.0, 0.0]),
            r"input.bounds.min\[2\]: must be below input.bounds.max\[2\] \(250.0 >= 200.0\)",
        ),
        (_set("input.bounds.max", 1e400), "input.bounds.max: must be a finite number"),
        (_set("input.features", ["a", "b", "c"]), "input.features: must be a list of 4"),
        (_set("input.features", ["a", "b", "a", "d"]), r"input.features\[2\]: 'a' repeats"),
        (_set("input.features", ["a", "", "c", "d"]), r"input.features\[1\]: must be a non"),
        (_set("input.image_layout", [1, 2, 2]), "input.image_layout: is only for modality"),
        (_set("preprocessing.kind", "whiten"), "preprocessing.kind: must be 'none' or"),
        (_set("preprocessing.std", [1, 0, 1, 1]), r"preprocessing.std\[1\]: must be above 0"),
        (_set("preprocessing.mean", [1, 2]), "preprocessing.mean: must have one entry per"),
        (_drop("preprocessing.std"), "preprocessing.std: is required for kind 'standardize'"),
        (_set("preprocessing", {"kind": "none", "mean": [0]}), "preprocessing.mean: unknown"),
        (_set("labels", ["only"]), "labels: must be a list of 2 to"),
        (_set("labels", ["a", "a"]), r"labels\[1\]: 'a' repeats labels\[0\]"),
        (_set("labels", ["a", 3]), r"labels\[1\]: must be a non-empty string"),
        (_set("data.test", "../test.safetensors"), "data.test: .* relative path"),
        (_drop("data.validation"), "data.validation: is required"),
        (_set("data.extra", "x.safetensors"), "data.extra: unknown field"),
    ],
)
def test_each_bad_field_is_refused_by_name(edit: Edit, field: str) -> None:
    doc = contract_doc()
    edit(doc)
    with pytest.raises(ContractError, match=f"^{field}"):
        parse_contract(doc)


def test_an_image_contract_needs_a_matching_layout() -> None:
    doc = contract_doc()
    doc["input"] = {
        "modality": "image",
        "shape": [1, 2, 2],
        "dtype": "float32",
        "bounds": {"min": 0, "max": 255},
    }
    doc["preprocessing"] = {"kind": "none"}
    with pytest.raises(ContractError, match=r"^input.image_layout: is required"):
        parse_contract(doc)
    doc["input"]["image_layout"] = [1, 2, 3]
    with pytest.raises(ContractError, match=r"^input.image_layout: C\*H\*W = 6"):
        parse_contract(doc)
    doc["input"]["image_layout"] = [1, 2, 2]
    assert parse_contract(doc).image_layout == (1, 2, 2)


def test_a_non_object_contract_is_refused() -> None:
    with pytest.raises(ContractError, match=r"^contract: must be a JSON object"):
        parse_contract([1, 2])


def test_read_contract_refuses_nan_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ztml-model.json"
    path.write_text(json.dumps(contract_doc()).replace("200.0", "NaN"))
    with pytest.raises(ContractError, match=r"not valid JSON"):
        read_contract(path)
    doc = contract_doc()
    doc["labels"] = ["x"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ContractError, match=r"^labels: .*\(in .*ztml-model.json\)"):
        read_contract(path)


def test_a_missing_contract_file_says_what_is_needed(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"does not exist"):
        read_contract(tmp_path / "ztml-model.json")


def test_a_model_path_names_its_weights_file(tmp_path: Path) -> None:
    from service.model.contract import CONTRACT_NAME, weights_path

    weights = tmp_path / "model.safetensors"
    assert weights_path(weights) == weights  # a file is itself
    assert weights_path(tmp_path) == weights  # the digits model's directory
    (tmp_path / CONTRACT_NAME).write_text(
        json.dumps({**contract_doc(), "weights": "w.safetensors"})
    )
    assert weights_path(tmp_path) == tmp_path / "w.safetensors"  # a package: its contract's
