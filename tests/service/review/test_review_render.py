"""Terminal heatmaps of 8x8 inputs."""

from __future__ import annotations

import pytest

from service.review.render import RAMP, heatmap, heatmap_lines


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
