"""Validation of request bodies against model contracts other than the digits."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.model.contract import DIGITS_CONTRACT, ModelContract
from service.sanitizer import (
    MAX_JSON_DEPTH,
    InputValidationError,
    check_json_depth,
    max_json_depth,
    parse_instances,
)

NAMES = tuple(f"feature {i}" for i in range(30))
NAMES = ("mean radius", *NAMES[1:])
LOWER = np.linspace(1.0, 30.0, 30)
LOWER[0] = 6.981
UPPER = LOWER * 4
UPPER[0] = 28.11


def tabular_contract(
    lower: Sequence[float] = tuple(LOWER),
    upper: Sequence[float] = tuple(UPPER),
    features: Sequence[str] | None = NAMES,
    shape: tuple[int, ...] | None = None,
) -> ModelContract:
    return dataclasses.replace(
        DIGITS_CONTRACT,
        name="tabular",
        version="1.0.0",
        modality="tabular",
        shape=shape or (len(lower),),
        lower=np.asarray(lower, dtype=np.float64),
        upper=np.asarray(upper, dtype=np.float64),
        features=None if features is None else tuple(features),
        image_layout=None,
        labels=("malignant", "benign"),
    )


def image_contract(
    layout: tuple[int, int, int], shape: tuple[int, ...] | None = None
) -> ModelContract:
    d = int(np.prod(layout))
    return dataclasses.replace(
        DIGITS_CONTRACT,
        name="image",
        version="1.0.0",
        shape=shape or (d,),
        lower=np.zeros(d),
        upper=np.ones(d),
        image_layout=layout,
    )


TABULAR = tabular_contract()


def row() -> list[float]:
    return [float(v) for v in (LOWER + UPPER) / 2]


def test_tabular_instances_parse_to_raw_float32_values() -> None:
    x = parse_instances({"instances": [row(), row()]}, max_batch=4, contract=TABULAR)
    assert x.shape == (2, 30)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[0], (LOWER + UPPER) / 2, rtol=1e-6)


def test_integer_values_within_a_features_bounds_are_accepted() -> None:
    values: list[object] = list(row())
    values[5] = int(UPPER[5])
    x = parse_instances({"instances": [values]}, max_batch=4, contract=TABULAR)
    assert x[0, 5] == int(UPPER[5])


def test_value_outside_a_features_bounds_names_field_feature_and_bounds() -> None:
    values: list[object] = list(row())
    values[0] = 5000
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [values]}, max_batch=4, contract=TABULAR)
    assert str(info.value) == "instances[0][0] (mean radius): value 5000 is outside [6.981, 28.11]"
    assert info.value.field == "instances[0][0]"
    assert info.value.feature == "mean radius"


def test_each_feature_has_its_own_bounds() -> None:
    values = row()
    values[3] = float(LOWER[3]) - 0.5  # within feature 2's range, below feature 3's
    assert LOWER[2] <= values[3]
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [row(), values]}, max_batch=4, contract=TABULAR)
    assert str(info.value).startswith(
        f"instances[1][3] (feature 3): value {values[3]:g} is outside [{LOWER[3]:g}, "
    )


def test_a_bound_itself_is_accepted() -> None:
    values = [float(v) for v in LOWER]
    parse_instances(
        {"instances": [values, [float(v) for v in UPPER]]}, max_batch=4, contract=TABULAR
    )


def test_unnamed_features_are_named_by_field_only() -> None:
    contract = tabular_contract(features=None)
    values = row()
    values[7] = -1.0
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [values]}, max_batch=4, contract=contract)
    assert str(info.value).startswith("instances[0][7]: value -1 is outside")


@pytest.mark.parametrize(
    ("bad", "description"), [("1", "a string"), (None, "null"), (True, "a boolean")]
)
def test_non_numeric_value_names_the_feature(bad: object, description: str) -> None:
    values: list[object] = list(row())
    values[0] = bad
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [values]}, max_batch=4, contract=TABULAR)
    assert str(info.value) == (
        f"instances[0][0] (mean radius): expected a number in [6.981, 28.11], got {description}"
    )


def test_nan_names_the_feature() -> None:
    values = row()
    values[2] = float("nan")
    with pytest.raises(InputValidationError, match=r"^instances\[0\]\[2\] \(feature 2\): .*finite"):
        parse_instances({"instances": [values]}, max_batch=4, contract=TABULAR)


def test_wrong_width_names_the_instance_and_the_width() -> None:
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [row()[:29]]}, max_batch=4, contract=TABULAR)
    assert info.value.field == "instances[0]"
    assert "has 29 values, expected 30" in str(info.value)


def test_tabular_messages_speak_of_instances_not_images() -> None:
    with pytest.raises(InputValidationError, match="send at least one instance"):
        parse_instances({"instances": []}, max_batch=4, contract=TABULAR)
    with pytest.raises(InputValidationError, match=r"\[\[30 numbers\], \.\.\.\]"):
        parse_instances({"rows": []}, max_batch=4, contract=TABULAR)


def test_a_tabular_instance_may_be_nested_in_its_declared_shape() -> None:
    contract = tabular_contract(shape=(5, 6))
    nested = [row()[i * 6 : (i + 1) * 6] for i in range(5)]
    x = parse_instances({"instances": [nested, row()]}, max_batch=4, contract=contract)
    np.testing.assert_array_equal(x[0], x[1])
    nested[4] = nested[4][:5]
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [nested]}, max_batch=4, contract=contract)
    assert info.value.field == "instances[0][4]"


def test_a_flat_tabular_contract_refuses_nested_instances() -> None:
    nested = [row()[i * 6 : (i + 1) * 6] for i in range(5)]
    with pytest.raises(InputValidationError, match="has 5 values, expected 30"):
        parse_instances({"instances": [nested]}, max_batch=4, contract=TABULAR)


def test_numpy_array_is_checked_against_each_features_bounds() -> None:
    x = np.tile((LOWER + UPPER) / 2, (3, 1))
    assert parse_instances(x, max_batch=4, contract=TABULAR).shape == (3, 30)
    x[2, 4] = UPPER[4] + 1
    with pytest.raises(InputValidationError) as info:
        parse_instances(x, max_batch=4, contract=TABULAR)
    assert str(info.value).startswith("instances[2][4] (feature 4): value")
    with pytest.raises(InputValidationError, match=r"\(N, 30\)"):
        parse_instances(np.zeros((2, 64)), max_batch=4, contract=TABULAR)


# -- images of other layouts -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64,), (1, 8, 8)])
def test_a_one_channel_image_may_be_flat_hw_or_chw(shape: tuple[int, ...]) -> None:
    contract = image_contract((1, 8, 8), shape=shape)
    flat = [(i % 17) / 16 for i in range(64)]
    grid = [flat[r * 8 : (r + 1) * 8] for r in range(8)]
    x = parse_instances({"instances": [flat, grid, [grid]]}, max_batch=4, contract=contract)
    assert x.shape == (3, 64)
    np.testing.assert_array_equal(x[0], x[1])
    np.testing.assert_array_equal(x[0], x[2])


def test_a_wrong_line_of_a_chw_image_is_named() -> None:
    contract = image_contract((1, 8, 8), shape=(1, 8, 8))
    grid = [[0.5] * 8 for _ in range(8)]
    grid[6] = [0.5] * 9
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [[grid]]}, max_batch=4, contract=contract)
    assert info.value.field == "instances[0][0][6]"
    assert "has 9 values, expected 8" in str(info.value)


def test_a_three_channel_image_is_flattened_channel_major() -> None:
    contract = image_contract((3, 4, 4))
    chw = [[[c + (r * 4 + w) / 100 for w in range(4)] for r in range(4)] for c in range(3)]
    chw = [[[v / 3 for v in line] for line in plane] for plane in chw]
    x = parse_instances({"instances": [chw]}, max_batch=4, contract=contract)
    np.testing.assert_allclose(x[0], np.asarray(chw, dtype=np.float32).reshape(48))
    with pytest.raises(InputValidationError, match="has 4 values, expected 48"):
        parse_instances({"instances": [chw[0]]}, max_batch=4, contract=contract)


def test_image_value_out_of_range_keeps_the_pixel_hint() -> None:
    contract = image_contract((3, 4, 4))
    values = [0.5] * 48
    values[47] = 1.5
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [values]}, max_batch=4, contract=contract)
    assert (
        str(info.value) == "instances[0][47]: value 1.5 is outside [0, 1]; scale pixels to [0, 1]"
    )


def test_json_depth_limit_allows_the_contracts_deepest_instance() -> None:
    assert max_json_depth() == MAX_JSON_DEPTH
    contract = image_contract((3, 4, 4), shape=(1, 3, 4, 4, 1, 1, 1))
    limit = max_json_depth(contract)
    assert limit == 2 + 7
    deep = [[[[[[[0.5]]] for _ in range(4)] for _ in range(4)] for _ in range(3)]]
    body = json.dumps({"instances": [deep]}).encode()
    check_json_depth(body, limit)
    with pytest.raises(InputValidationError):
        check_json_depth(body)
    assert parse_instances(json.loads(body), max_batch=1, contract=contract).shape == (1, 48)


VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([float(v) for v in LOWER] + [float(v) for v in UPPER]),
    st.none(),
    st.booleans(),
    st.text(max_size=2),
)
INSTANCES = st.one_of(
    st.lists(VALUES, min_size=28, max_size=31),
    st.lists(st.lists(VALUES, min_size=5, max_size=7), min_size=4, max_size=6),
    st.lists(
        st.floats(min_value=0.0, max_value=1.0).map(lambda t: t * 2.0), min_size=30, max_size=30
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(INSTANCES, max_size=5), st.sampled_from([(30,), (5, 6)]))
def test_any_tabular_payload_parses_within_each_features_bounds_or_names_a_field(
    instances: list[object], shape: tuple[int, ...]
) -> None:
    contract = tabular_contract(shape=shape)
    error: InputValidationError | None = None
    try:
        x = parse_instances({"instances": instances}, max_batch=4, contract=contract)
    except InputValidationError as err:
        error = err
    if error is not None:
        assert str(error).startswith(error.field)
        return
    assert x.shape == (len(instances), 30)
    assert (x >= LOWER.astype(np.float32)).all()
    assert (x <= UPPER.astype(np.float32)).all()


def test_a_contract_without_finite_bounds_is_a_configuration_error() -> None:
    upper = UPPER.copy()
    upper[2] = np.inf
    with pytest.raises(ValueError, match="finite"):
        parse_instances({"instances": [row()]}, max_batch=4, contract=tabular_contract(upper=upper))


def test_integers_in_range_are_accepted_and_huge_ones_refused() -> None:
    values: list[object] = list(row())
    values[9] = int(LOWER[9]) + 1
    assert parse_instances([values], max_batch=1, contract=TABULAR)[0, 9] == values[9]
    values[9] = 10**400
    with pytest.raises(InputValidationError, match="very large integer"):
        parse_instances([values], max_batch=1, contract=TABULAR)
