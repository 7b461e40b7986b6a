"""How every ``ztml`` command reports a failure: one red line on stderr, exit code 1."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

err_console = Console(stderr=True)


def fail(message: object) -> typer.Exit:
    """Print ``error: <message>`` in red to stderr and return the exit to raise.

    The message is printed as plain text (no rich markup or highlighting), so paths
    and values in it appear exactly as given, and it is never wrapped mid-line.

    Args:
        message: What is wrong and how to fix it (an exception prints its message).

    Returns:
        ``typer.Exit(1)``, for the caller to ``raise ... from None`` (no traceback).
    """
    err_console.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)
    return typer.Exit(1)
