"""Render an 8x8 input as a small heatmap for the terminal.

Each pixel is two characters from a brightness ramp (so the image keeps its aspect
ratio) with a matching grey background when colour is available; the plain characters
alone still show the digit in a log or a non-colour terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

IMAGE_SIDE = 8
RAMP = " .:-=+*#%@"


def printable(text: str) -> Text:
    """Return untrusted text for the terminal: no markup, control characters escaped.

    Stored fields (subject, reasons, notes) come from requests; an escape sequence in
    them must not move the cursor or clear the reviewer's screen.
    """
    return Text("".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text))


def _level(value: float) -> int:
    clipped = min(1.0, max(0.0, value))
    return min(len(RAMP) - 1, int(clipped * len(RAMP)))


def heatmap_lines(pixels: Sequence[float]) -> list[str]:
    """Return the 8 text lines of a 64-pixel image (values in [0, 1]).

    Raises:
        ValueError: If there are not 64 pixels.
    """
    if len(pixels) != IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(f"expected 64 pixels, got {len(pixels)}")
    return [
        "".join(RAMP[_level(v)] * 2 for v in pixels[r * IMAGE_SIDE : (r + 1) * IMAGE_SIDE])
        for r in range(IMAGE_SIDE)
    ]


def heatmap(pixels: Sequence[float]) -> Text:
    """Return the image as rich Text: ramp characters on a grey background, in a frame."""
    text = Text()
    border = "+" + "-" * (2 * IMAGE_SIDE) + "+\n"
    text.append(border)
    for r in range(IMAGE_SIDE):
        text.append("|")
        for v in pixels[r * IMAGE_SIDE : (r + 1) * IMAGE_SIDE]:
            grey = 232 + round(min(1.0, max(0.0, v)) * 23)
            fg = "black" if v > 0.5 else "white"
            text.append(RAMP[_level(v)] * 2, style=f"{fg} on color({grey})")
        text.append("|\n")
    text.append(border.rstrip("\n"))
    return text
