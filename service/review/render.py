"""Render review inputs for the terminal: images as small heatmaps, other rows as tables.

Each pixel is two characters from a brightness ramp (so the image keeps its aspect
ratio) with a matching grey background when colour is available; the plain characters
alone still show the picture in a log or a non-colour terminal.

An image model's row of ``C * H * W`` values is drawn as one ``H x W`` picture of the
mean over its channels (one picture per instance keeps ``ztml review show`` short; the
per-channel values are in ``--json``). Values outside [0, 1] (a normalized input) are
scaled by the instance's own minimum and maximum, and the panel title says so; pictures
wider or taller than :data:`MAX_SIDE` pixels are shrunk by averaging square blocks.
Rows of other models are shown as ``feature: value`` tables (``index: value`` when the
model does not name its features).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rich.table import Table
from rich.text import Text

IMAGE_SIDE = 8
RAMP = " .:-=+*#%@"
#: The widest and tallest picture drawn, in pixels (two characters each).
MAX_SIDE = 40
#: The most values of one row shown as a table.
MAX_SHOWN_VALUES = 100


def printable(text: str) -> Text:
    """Return untrusted text for the terminal: no markup, control characters escaped.

    Stored fields (subject, reasons, notes) come from requests; an escape sequence in
    them must not move the cursor or clear the reviewer's screen.
    """
    return Text("".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text))


def _level(value: float) -> int:
    clipped = min(1.0, max(0.0, value))
    return min(len(RAMP) - 1, int(clipped * len(RAMP)))


def _check_size(pixels: Sequence[float], height: int, width: int) -> None:
    if len(pixels) != height * width:
        raise ValueError(f"expected {height * width} pixels, got {len(pixels)}")


def heatmap_lines(
    pixels: Sequence[float], *, height: int = IMAGE_SIDE, width: int = IMAGE_SIDE
) -> list[str]:
    """Return the ``height`` text lines of an image (values in [0, 1], row-major).

    Raises:
        ValueError: If there are not ``height * width`` pixels (64 by default).
    """
    _check_size(pixels, height, width)
    return [
        "".join(RAMP[_level(v)] * 2 for v in pixels[r * width : (r + 1) * width])
        for r in range(height)
    ]


def heatmap(pixels: Sequence[float], *, height: int = IMAGE_SIDE, width: int = IMAGE_SIDE) -> Text:
    """Return the image as rich Text: ramp characters on a grey background, in a frame.

    Raises:
        ValueError: If there are not ``height * width`` pixels (64 by default).
    """
    _check_size(pixels, height, width)
    text = Text()
    border = "+" + "-" * (2 * width) + "+\n"
    text.append(border)
    for r in range(height):
        text.append("|")
        for v in pixels[r * width : (r + 1) * width]:
            grey = 232 + round(min(1.0, max(0.0, v)) * 23)
            fg = "black" if v > 0.5 else "white"
            text.append(RAMP[_level(v)] * 2, style=f"{fg} on color({grey})")
        text.append("|\n")
    text.append(border.rstrip("\n"))
    return text


def image_heatmap(row: Sequence[float], layout: tuple[int, int, int]) -> tuple[Text, str]:
    """Return one instance of an image model as a heatmap, and a note for its title.

    The picture is the mean of the ``C`` channels, scaled into [0, 1] by the instance's
    minimum and maximum if it leaves that range, and shrunk to at most
    :data:`MAX_SIDE` pixels a side. The note says what was done ("" if nothing).

    Raises:
        ValueError: If ``row`` does not hold ``C * H * W`` values.
    """
    c, h, w = layout
    _check_size(row, c * h, w)
    plane = np.asarray(row, dtype=np.float64).reshape(c, h, w).mean(axis=0)
    notes = [f"mean of {c} channels"] if c > 1 else []
    low, high = float(plane.min()), float(plane.max())
    if low < 0.0 or high > 1.0:
        plane = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
        notes.append(f"scaled from [{low:.3g}, {high:.3g}]")
    block = math.ceil(max(h, w) / MAX_SIDE)
    if block > 1:
        padded = np.full((math.ceil(h / block) * block, math.ceil(w / block) * block), np.nan)
        padded[:h, :w] = plane
        bh, bw = padded.shape[0] // block, padded.shape[1] // block
        plane = np.nanmean(padded.reshape(bh, block, bw, block), axis=(1, 3))
        notes.append(f"{h}x{w} shrunk to {bh}x{bw}")
    pixels = [float(v) for v in plane.ravel()]
    return heatmap(pixels, height=plane.shape[0], width=plane.shape[1]), "; ".join(notes)


def values_table(row: Sequence[float], features: Sequence[str] | None, *, title: str) -> Table:
    """Return one instance as a ``feature: value`` table (``index: value`` without names).

    At most :data:`MAX_SHOWN_VALUES` rows are shown; a last row counts the rest.
    """
    table = Table(title=title, title_justify="left")
    table.add_column("feature" if features is not None else "index", overflow="fold")
    table.add_column("value", justify="right")
    for i, value in enumerate(row[:MAX_SHOWN_VALUES]):
        name = printable(features[i]) if features is not None else Text(str(i))
        table.add_row(name, f"{value:.6g}")
    if len(row) > MAX_SHOWN_VALUES:
        table.add_row(Text(f"... {len(row) - MAX_SHOWN_VALUES} more", style="dim"), "")
    return table
