"""The progress bar ``ztml`` commands show on stderr while they read a file or a log."""

from __future__ import annotations

from typing import Any, Literal

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from service.console.failure import err_console


def work_progress(
    label: str, *, unit: Literal["bytes", "items"] = "items", disable: bool = False
) -> Progress:
    """Return a transient progress bar on stderr: label, bar, amount done, time left.

    Args:
        label: What is being done (``"hashing"``, ``"verifying"``).
        unit: ``bytes`` shows sizes (``1.2/3.4 MB``), ``items`` shows ``done/total``.
        disable: Show nothing (e.g. when there is no work).

    Returns:
        The ``Progress``; use it as a context manager and add one task to it.
    """
    columns: list[Any] = [TextColumn(label), BarColumn()]
    columns.append(
        DownloadColumn() if unit == "bytes" else TextColumn("{task.completed}/{task.total}")
    )
    columns.append(TimeRemainingColumn())
    return Progress(*columns, console=err_console, transient=True, disable=disable)
