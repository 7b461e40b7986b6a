"""``ztml keys``: create and list the Ed25519 keys ztml signs with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from service.console import fail
from service.keys.errors import KeyError_
from service.keys.store import STANDARD_KEYS, init_keys
from service.toolchain.paths import ztml_home

app = typer.Typer(help="Create and list signing keys (Ed25519, 0600 files in a 0700 directory).")


@app.command("init")
def init(
    directory: Annotated[
        Path | None, typer.Option(help="Key directory (default: $ZTML_HOME/keys).")
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="Key to create (repeatable). Default: the standard set."),
    ] = None,
) -> None:
    """Create missing keys (trainer, approver, audit, issuer, oms-signer); keep existing ones.

    Private keys are written 0600 in a 0700 directory and never printed; only their key
    ids and the public key paths are shown. The OMS signing key (EC P-256, for
    `ztml model sign`) is made with the standard set; its public key is trusted in
    oms_signers/.
    """
    from service.oms import OmsError, init_signing_key

    target = directory or ztml_home() / "keys"
    try:
        infos = init_keys(target, name or list(STANDARD_KEYS))
        oms = None if name else init_signing_key(target)
    except (KeyError_, OmsError) as err:
        raise fail(err) from None
    table = Table(title=f"keys in {target}")
    for column in ("name", "key id", "public key", "status"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.name, info.key_id, str(info.public_path), "created" if info.created else "kept"
        )
    if oms is not None:
        table.add_row(
            "oms-signer",
            f"ec-p256 {oms.hint[:16]}",
            str(oms.public_path),
            "created" if oms.created else "kept",
        )
    Console().print(table)
