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
from service.review.render import image_heatmap, printable, values_table

app = typer.Typer(
    help=(
        "Human review of flagged requests (the queue of $ZTML_MONITOR_URL when set, as in a "
        "scaled-out service; else $ZTML_HOME/review.db)."
    ),
    no_args_is_help=True,
)
console = Console()
MAX_SHOWN_IMAGES = 16
#: How a legacy item (no layout, 64 unnamed values) is drawn: the built-in 8x8 digits.
DIGITS_LAYOUT = (1, 8, 8)


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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (without inputs and feature names).")
    ] = False,
    db: DbOption = None,
) -> None:
    """List review items, oldest first."""
    try:
        with _open(db) as queue:
            items = queue.list(status.value)
    except ReviewError as err:
        raise fail(err) from None
    if as_json:
        hidden = ("instances", "features")
        rows = [{k: v for k, v in i.to_dict().items() if k not in hidden} for i in items]
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
    width = len(item.instances[0]) if item.instances else 0
    if item.is_image:
        fields["instances"] = f"{len(item.instances)} image(s)"
    else:
        fields["instances"] = f"{len(item.instances)} row(s) of {width} values"
    fields["suspicion"] = f"{item.suspicion:.3f}"
    if item.layout is not None:
        fields["layout"] = "x".join(str(n) for n in item.layout) + " (C x H x W)"
    if item.features is not None:
        fields["features"] = f"{len(item.features)} names"
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
    """Show one item's details and its inputs: heatmaps for images, tables otherwise."""
    try:
        with _open(db) as queue:
            item = queue.get(item_id)
    except ReviewError as err:
        raise fail(err) from None
    if as_json:
        typer.echo(json.dumps(item.to_dict(), indent=2))
        return
    console.print(Panel(_details(item), title=f"review item {item.id}"))
    console.print(Group(*_inputs(item)))
    if len(item.instances) > MAX_SHOWN_IMAGES:
        console.print(
            f"... {len(item.instances) - MAX_SHOWN_IMAGES} more; use --json for all inputs"
        )


def _inputs(item: ReviewItem) -> list[Panel | Table]:
    """The first instances drawn: heatmaps of an image model's, tables of any other's."""
    shown = item.instances[:MAX_SHOWN_IMAGES]
    if not item.is_image:
        return [
            values_table(row, item.features, title=f"instances[{i}]") for i, row in enumerate(shown)
        ]
    layout = item.layout or DIGITS_LAYOUT
    panels: list[Panel | Table] = []
    for i, row in enumerate(shown):
        picture, note = image_heatmap(row, layout)
        title = f"instances[{i}]" + (f" ({note})" if note else "")
        panels.append(Panel.fit(picture, title=title))
    return panels


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
