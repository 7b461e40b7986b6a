"""The verifier-state options of every verifying command: ``--state FILE`` and ``--no-state``.

``ztml ledger verify`` and ``ztml audit verify`` keep the newest checkpoint they accepted
per log (:class:`~service.chain.seen.SeenCheckpoints`, by default
``$ZTML_HOME/seen-checkpoints.json``) and require the log to still hold it next time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.chain.seen import SeenCheckpoints, default_seen_path
from service.console.failure import fail

StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state",
        help="This verifier's kept checkpoints (default $ZTML_HOME/seen-checkpoints.json).",
    ),
]
NoStateOpt = Annotated[
    bool,
    typer.Option(
        "--no-state", help="Neither read nor keep checkpoints (a rollback goes unnoticed)."
    ),
]


def kept_checkpoints(state: Path | None, no_state: bool) -> SeenCheckpoints | None:
    """The verifier's kept checkpoints the options name (None with ``--no-state``).

    Raises:
        typer.Exit: both options were given.
    """
    if no_state:
        if state is not None:
            raise fail("Give either --state or --no-state, not both.")
        return None
    return SeenCheckpoints(state or default_seen_path())
