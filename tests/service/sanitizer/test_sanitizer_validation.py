"""Strict validation of prediction request bodies."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.sanitizer import (
    MAX_JSON_DEPTH,
    InputValidationError,
    PayloadTooLargeError,
    check_body_size,
    check_json_depth,
    parse_instances,
)

MAX_BATCH = 8


def image(value: float = 0.5) -> list[float]:
    return [value] * 64


def test_flat_instances_parse_to_float32_batch() -> None:
    x = parse_instances({"instances": [image(0.0), image(1.0)]}, max_batch=MAX_BATCH)
    assert x.dtype == np.float32
    assert x.shape == (2, 64)
    assert x[1].tolist() == [1.0] * 64


def test_8x8_instances_are_flattened_row_major() -> None:
    grid = [[r / 10 + c / 100 for c in range(8)] for r in range(8)]
    x = parse_instances({"instances": [grid]}, max_batch=MAX_BATCH)
    assert x.shape == (1, 64)
    assert x[0, 10] == pytest.approx(0.12)


def test_integers_zero_and_one_are_accepted() -> None:
    x = parse_instances({"instances": [[0, 1] * 32]}, max_batch=MAX_BATCH)
    assert x[0, :2].tolist() == [0.0, 1.0]


def test_numpy_array_payload_is_validated() -> None:
    x = parse_instances(np.full((3, 8, 8), 0.25), max_batch=MAX_BATCH)
    assert x.shape == (3, 64)


def test_non_object_body_is_rejected() -> None:
    with pytest.raises(InputValidationError) as info:
        parse_instances("[[0.5]]", max_batch=MAX_BATCH)
    assert info.value.field == "body"


def test_missing_instances_key_is_rejected() -> None:
    with pytest.raises(InputValidationError, match="instances: is missing"):
        parse_instances({"inputs": [image()]}, max_batch=MAX_BATCH)


def test_instances_that_are_not_a_list_are_rejected() -> None:
    with pytest.raises(InputValidationError, match="expected a list of images, got an object"):
        parse_instances({"instances": {"0": image()}}, max_batch=MAX_BATCH)


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(InputValidationError, match="is empty"):
        parse_instances({"instances": []}, max_batch=MAX_BATCH)


def test_batch_over_the_limit_is_rejected_before_rows_are_read() -> None:
    rows: list[object] = ["not even a row"] * (MAX_BATCH + 1)
    with pytest.raises(InputValidationError, match=f"exceeds the limit of {MAX_BATCH}"):
        parse_instances({"instances": rows}, max_batch=MAX_BATCH)


def test_row_of_wrong_length_names_the_row() -> None:
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [image(), [0.5] * 63]}, max_batch=MAX_BATCH)
    assert info.value.field == "instances[1]"
    assert "has 63 values, expected 64" in str(info.value)


def test_8x8_row_of_wrong_length_names_the_line() -> None:
    grid = [[0.5] * 8 for _ in range(8)]
    grid[3] = [0.5] * 7
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [grid]}, max_batch=MAX_BATCH)
    assert info.value.field == "instances[0][3]"


@pytest.mark.parametrize(
    ("bad", "description"),
    [("0.5", "a string"), (True, "a boolean"), (None, "null"), ({"v": 0.5}, "an object")],
)
def test_non_numeric_value_is_rejected(bad: object, description: str) -> None:
    row: list[object] = list(image())
    row[10] = bad
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": [row]}, max_batch=MAX_BATCH)
    assert info.value.field == "instances[0][10]"
    assert description in info.value.message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_rejected(bad: float) -> None:
    row = image()
    row[5] = bad
    with pytest.raises(InputValidationError, match="not a finite number"):
        parse_instances({"instances": [row]}, max_batch=MAX_BATCH)


def test_value_outside_unit_interval_names_field_and_value() -> None:
    rows = [image() for _ in range(4)]
    rows[3][10] = 1.7
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": rows}, max_batch=MAX_BATCH)
    assert str(info.value).startswith("instances[3][10]: value 1.7 is outside [0, 1]")


def test_negative_value_is_rejected() -> None:
    with pytest.raises(InputValidationError, match="outside"):
        parse_instances({"instances": [[-0.01, *image()[1:]]]}, max_batch=MAX_BATCH)


def test_huge_integer_is_rejected_without_overflow() -> None:
    with pytest.raises(InputValidationError, match="very large integer"):
        parse_instances({"instances": [[10**400, *image()[1:]]]}, max_batch=MAX_BATCH)


def test_numpy_array_with_nan_is_rejected() -> None:
    x = np.full((2, 64), 0.5)
    x[1, 7] = np.nan
    with pytest.raises(InputValidationError) as info:
        parse_instances({"instances": x}, max_batch=MAX_BATCH)
    assert info.value.field == "instances[1][7]"


def test_numpy_array_of_strings_is_rejected() -> None:
    with pytest.raises(InputValidationError, match="dtype"):
        parse_instances({"instances": np.full((1, 64), "a")}, max_batch=MAX_BATCH)


def test_invalid_max_batch_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        parse_instances({"instances": [image()]}, max_batch=0)


def test_body_over_the_limit_is_payload_too_large() -> None:
    with pytest.raises(PayloadTooLargeError) as info:
        check_body_size(1_000_001, 1_000_000)
    assert info.value.status_code == 413
    assert "limit is 1000000 bytes" in str(info.value)


def test_body_at_the_limit_is_accepted() -> None:
    check_body_size(1_000_000, 1_000_000)


def test_negative_body_size_is_rejected() -> None:
    with pytest.raises(InputValidationError, match="content-length"):
        check_body_size(-1, 100)


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=1.0),
    st.text(max_size=4),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=10), st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=40,
)
PIXEL = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0, 1]), JSON_SCALARS)
NEAR_VALID_ROW = st.one_of(
    st.lists(PIXEL, min_size=62, max_size=66),
    st.lists(st.lists(PIXEL, min_size=7, max_size=9), min_size=7, max_size=9),
    JSON_VALUES,
)
PAYLOADS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"instances": st.lists(NEAR_VALID_ROW, max_size=MAX_BATCH + 2)}),
    st.fixed_dictionaries(
        {
            "instances": st.lists(
                st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=64, max_size=64),
                min_size=1,
                max_size=MAX_BATCH + 1,
            )
        }
    ),
)


@settings(max_examples=100, deadline=None)
@given(PAYLOADS)
def test_any_payload_parses_to_valid_batch_or_raises_validation_error(payload: object) -> None:
    error: InputValidationError | None = None
    try:
        x = parse_instances(payload, max_batch=MAX_BATCH)
    except InputValidationError as err:
        error = err
    if error is not None:
        assert error.field
        assert str(error).startswith(error.field)
        return
    assert isinstance(x, np.ndarray)
    assert x.dtype == np.float32
    assert x.ndim == 2
    assert x.shape[1] == 64
    assert 1 <= x.shape[0] <= MAX_BATCH
    assert np.isfinite(x).all()
    assert ((x >= 0.0) & (x <= 1.0)).all()


# -- JSON nesting depth --------------------------------------------------------------------


def nested(depth: int, inner: bytes = b"0") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def test_body_nested_exactly_at_the_depth_limit_is_accepted() -> None:
    check_json_depth(nested(MAX_JSON_DEPTH))


def test_body_nested_one_level_deeper_than_the_limit_is_refused_naming_the_depth() -> None:
    with pytest.raises(InputValidationError) as refused:
        check_json_depth(nested(MAX_JSON_DEPTH + 1))
    assert refused.value.field == "body"
    assert f"{MAX_JSON_DEPTH + 1} levels deep; the limit is {MAX_JSON_DEPTH}" in str(refused.value)


def test_objects_count_towards_the_depth_like_arrays() -> None:
    body = b'{"a": ' * 5 + b"[[[[0]]]]" + b"}" * 5
    with pytest.raises(InputValidationError, match="9 levels deep"):
        check_json_depth(body)


def test_brackets_inside_strings_do_not_count() -> None:
    check_json_depth(b'{"instances": "' + b"[{" * 500 + b'"}')


def test_escaped_quotes_do_not_end_a_string() -> None:
    # The brackets after \" are still inside the string; after \\" they are not.
    check_json_depth(b'["\\"' + b"[" * 50 + b'"]')
    with pytest.raises(InputValidationError):
        check_json_depth(b'["\\\\"' + b"[" * 50 + b"]" * 51)


def test_unbalanced_deep_opening_is_refused_for_its_depth() -> None:
    with pytest.raises(InputValidationError, match="100000 levels deep"):
        check_json_depth(b"[" * 100_000)


def test_valid_batch_of_8x8_images_is_within_the_depth_limit() -> None:
    grid = [[0.5] * 8 for _ in range(8)]
    check_json_depth(json.dumps({"instances": [grid] * 100}).encode())


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(alphabet='[]{}"\\a'),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), children, max_size=3)
        ),
        max_leaves=20,
    )
)
def test_depth_matches_the_nesting_of_any_json_value(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    body = json.dumps(value).encode()
    actual = depth(value)
    check_json_depth(body, limit=actual)
    if actual > 0:
        with pytest.raises(InputValidationError):
            check_json_depth(body, limit=actual - 1)
