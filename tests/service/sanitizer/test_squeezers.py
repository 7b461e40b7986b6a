"""Bit-depth reduction, quantization and median smoothing on 8x8 images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import median_filter

from service.sanitizer import BitDepth, MedianSmoothing, Quantize, squeezer_from_name


def test_one_bit_depth_binarises_at_one_half() -> None:
    x = torch.tensor([[0.0, 0.49, 0.51, 1.0] * 16])
    assert BitDepth(1)(x)[0, :4].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_bit_depth_output_has_two_to_the_bits_levels() -> None:
    x = torch.rand(50, 64, generator=torch.Generator().manual_seed(0))
    assert len(torch.unique(BitDepth(2)(x))) <= 4


def test_quantize_eight_levels_equals_three_bits() -> None:
    x = torch.rand(20, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(Quantize(8)(x), BitDepth(3)(x))


def test_median_3x3_matches_scipy_with_edge_replication() -> None:
    x = torch.rand(5, 64, generator=torch.Generator().manual_seed(2))
    ours = MedianSmoothing(3)(x).numpy().reshape(5, 8, 8)
    for image, got in zip(x.numpy().reshape(5, 8, 8), ours, strict=True):
        np.testing.assert_allclose(got, median_filter(image, size=3, mode="nearest"), rtol=1e-6)


def test_median_2x2_averages_the_two_middle_values() -> None:
    image = torch.zeros(1, 64)
    image[0, 0], image[0, 1], image[0, 8], image[0, 9] = 0.1, 0.2, 0.6, 0.9
    assert MedianSmoothing(2)(image)[0, 0].item() == pytest.approx(0.4)


def test_median_removes_a_single_bright_pixel() -> None:
    image = torch.zeros(1, 64)
    image[0, 27] = 1.0
    assert MedianSmoothing(3)(image).abs().sum().item() == 0.0


def test_squeezers_keep_the_batch_shape() -> None:
    x = torch.rand(7, 64)
    for squeeze in (BitDepth(3), Quantize(10), MedianSmoothing(2), MedianSmoothing(3)):
        assert squeeze(x).shape == (7, 64)


def test_bit_depth_has_two_to_the_bits_levels() -> None:
    assert BitDepth(3).levels == 8


@pytest.mark.parametrize("name", ["bits-3", "levels-9", "levels-14", "median-2x2", "median-3x3"])
def test_squeezer_names_round_trip(name: str) -> None:
    assert squeezer_from_name(name).name == name


@pytest.mark.parametrize("name", ["bits-0", "bits-9", "median-2x3", "median-9x9", "blur-3", "x"])
def test_bad_squeezer_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="squeezer"):
        squeezer_from_name(name)
