"""Terminal heatmaps of image inputs and tables of other inputs."""

from __future__ import annotations

import numpy as np
import pytest

from service.review.render import (
    MAX_SHOWN_VALUES,
    RAMP,
    heatmap,
    heatmap_lines,
    image_heatmap,
    values_table,
)


def test_heatmap_lines_are_eight_rows_of_sixteen_characters() -> None:
    lines = heatmap_lines([0.0] * 64)
    assert len(lines) == 8
    assert all(line == " " * 16 for line in lines)


def test_bright_pixels_use_the_densest_character() -> None:
    pixels = [0.0] * 64
    pixels[9] = 1.0
    assert heatmap_lines(pixels)[1][2:4] == RAMP[-1] * 2


def test_out_of_range_values_are_clipped() -> None:
    assert heatmap_lines([-3.0, 7.0] * 32)[0][:4] == RAMP[0] * 2 + RAMP[-1] * 2


def test_wrong_pixel_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="64 pixels"):
        heatmap_lines([0.0] * 63)


def test_rich_heatmap_has_a_frame() -> None:
    text = heatmap([0.5] * 64).plain
    assert text.splitlines()[0] == "+" + "-" * 16 + "+"
    assert len(text.splitlines()) == 10


def test_a_1x8x8_layout_draws_the_same_heatmap_as_64_pixels() -> None:
    pixels = [n / 64 for n in range(64)]
    picture, note = image_heatmap(pixels, (1, 8, 8))
    assert picture.plain == heatmap(pixels).plain
    assert note == ""


def test_a_3x4x4_layout_draws_the_mean_of_its_channels() -> None:
    channels = np.stack([np.zeros((4, 4)), np.ones((4, 4)), np.full((4, 4), 0.5)])
    picture, note = image_heatmap(channels.ravel().tolist(), (3, 4, 4))
    assert picture.plain == heatmap([0.5] * 16, height=4, width=4).plain
    assert picture.plain.splitlines()[0] == "+" + "-" * 8 + "+"
    assert note == "mean of 3 channels"


def test_normalized_images_are_scaled_into_the_ramp() -> None:
    picture, note = image_heatmap([-2.0, 0.0, 0.0, 2.0], (1, 2, 2))
    assert picture.plain.splitlines()[1] == "|" + RAMP[0] * 2 + RAMP[5] * 2 + "|"
    assert note == "scaled from [-2, 2]"


def test_large_images_are_shrunk_by_block_means() -> None:
    picture, note = image_heatmap([0.25] * (3 * 224 * 224), (3, 224, 224))
    lines = picture.plain.splitlines()
    assert len(lines) == 2 + 38
    assert len(lines[0]) == 2 + 2 * 38
    assert "224x224 shrunk to 38x38" in note


def test_a_row_that_does_not_fill_the_layout_is_rejected() -> None:
    with pytest.raises(ValueError, match="48 pixels"):
        image_heatmap([0.0] * 47, (3, 4, 4))


def test_named_features_are_a_feature_value_table() -> None:
    table = values_table([0.5, 12.0], ["mean radius", "mean texture"], title="instances[0]")
    cells = [list(column.cells) for column in table.columns]
    assert [column.header for column in table.columns] == ["feature", "value"]
    assert [str(c) for c in cells[0]] == ["mean radius", "mean texture"]
    assert cells[1] == ["0.5", "12"]


def test_unnamed_features_are_an_index_value_table_cut_at_the_limit() -> None:
    table = values_table([1.0] * (MAX_SHOWN_VALUES + 5), None, title="instances[0]")
    assert table.columns[0].header == "index"
    assert table.row_count == MAX_SHOWN_VALUES + 1
    assert "5 more" in str(list(table.columns[0].cells)[-1])
