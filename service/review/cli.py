"""``ztml review``: list, inspect and resolve requests flagged for human review."""

from __future__ import annotations

import enum
import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from service.console import fail
from service.review.errors import ReviewError
from service.review.queue import ReviewItem, ReviewQueue, default_location
from service.review.render import heatmap, printable

app = typer.Typer(
    help=(
        "Human review of flagged requests (the queue of $ZTML_MONITOR_URL when set, as in a "
        "scaled-out service; else $ZTML_HOME/review.db)."
    ),
    no_args_is_help=True,
)
console = Console()
MAX_SHOWN_IMAGES = 16


class StatusChoice(enum.StrEnum):
    """Which items to list."""

    open = "open"
    resolved = "resolved"
    all = "all"


class VerdictChoice(enum.StrEnum):
    """A reviewer's verdict."""

    benign = "benign"
    malicious = "malicious"


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help=(
            "Review database: a file or a postgresql:// URL (default: $ZTML_MONITOR_URL, "
            "else $ZTML_HOME/review.db)."
        ),
    ),
]


def _open(db: str | None) -> ReviewQueue:
    if db is None:
        return ReviewQueue(default_location())
    return ReviewQueue(db if db.startswith(("postgresql://", "postgres://")) else Path(db))


@app.command("list")
def list_items(
    status: Annotated[
        StatusChoice, typer.Option(help="Which items: open, resolved or all.")
    ] = StatusChoice.open,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (without inputs).")] = False,
    db: DbOption = None,
) -> None:
    """List review items, oldest first."""
    try:
        with _open(db) as queue:
            items = queue.list(status.value)
    except ReviewError as err:
        raise fail(err) from None
    if as_json:
        rows = [{k: v for k, v in i.to_dict().items() if k != "instances"} for i in items]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"review items ({status.value}): {len(items)}")
    for column in ("id", "created", "status", "suspicion", "subject", "tenant", "reasons"):
        table.add_column(column, overflow="fold")
    for item in items:
        shown = item.status if item.verdict is None else f"{item.status}: {item.verdict}"
        cells = (
            str(item.id),
            item.created,
            shown,
            f"{item.suspicion:.2f}",
            item.subject or "-",
            item.tenant or "-",
            "; ".join(item.reasons),
        )
        table.add_row(*(printable(cell) for cell in cells))
    console.print(table)


def _details(item: ReviewItem) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    fields = item.to_dict()
    fields["reasons"] = "; ".join(item.reasons)
    fields["instances"] = f"{len(item.instances)} image(s)"
    fields["suspicion"] = f"{item.suspicion:.3f}"
    for key, value in fields.items():
        table.add_row(key, printable("-" if value is None or value == "" else str(value)))
    return table


@app.command("show")
def show(
    item_id: Annotated[
        int, typer.Argument(metavar="ID", help="The review item id (see `ztml review list`).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the item as JSON.")] = False,
    db: DbOption = None,
) -> None:
    """Show one item's details and its input images as terminal heatmaps."""
    try:
        with _open(db) as queue:
            item = queue.get(item_id)
    except ReviewError as err:
        raise fail(err) from None
    if as_json:
        typer.echo(json.dumps(item.to_dict(), indent=2))
        return
    console.print(Panel(_details(item), title=f"review item {item.id}"))
    panels = [
        Panel.fit(heatmap(pixels), title=f"instances[{i}]")
        for i, pixels in enumerate(item.instances[:MAX_SHOWN_IMAGES])
    ]
    console.print(Group(*panels))
    if len(item.instances) > MAX_SHOWN_IMAGES:
        console.print(
            f"... {len(item.instances) - MAX_SHOWN_IMAGES} more; use --json for all inputs"
        )


@app.command("resolve")
def resolve(
    item_id: Annotated[int, typer.Argument(metavar="ID", help="The review item id.")],
    verdict: Annotated[VerdictChoice, typer.Option(help="benign or malicious.")],
    note: Annotated[str, typer.Option(help="Why you decided so (recorded with the verdict).")],
    reviewer: Annotated[
        str | None, typer.Option(help="Your name (default: the login name).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Resolve an open item with a verdict; an item can be resolved only once."""
    try:
        with _open(db) as queue:
            item = queue.resolve(
                item_id, verdict=verdict.value, reviewer=reviewer or getpass.getuser(), note=note
            )
    except ReviewError as err:
        raise fail(err) from None
    console.print(
        Text.assemble(
            ("resolved", "green"),
            printable(f" item {item.id} as {item.verdict} by {item.reviewer}"),
        )
    )
