"""Entry point of the ``ztml`` command.

Each part (keys, ledger, audit, model, token, review, the local stack) has its own
Typer sub-application in its package; this module only wires them together, so
``ztml --help`` starts fast and never imports torch.
"""

from __future__ import annotations

import importlib
from importlib import metadata

import typer

from service.cli.doctor import doctor
from service.stack.cli import down, up

app = typer.Typer(
    name="ztml",
    help=(
        "ztml: a zero-trust serving stack for PyTorch models.\n\n"
        "Every request is authenticated, rate-limited, authorized by OPA, sanitized, "
        "served by a model verified against a signed provenance ledger, and audited in a "
        "hash-chained log. Start with `ztml doctor`, then `ztml up`."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

# (module holding a Typer app named `app`, sub-command name), one per package CLI.
SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("service.keys.cli", "keys"),
    ("service.ledger.cli", "ledger"),
    ("service.authn.cli", "token"),
    ("service.review.cli", "review"),
    ("service.audit.cli", "audit"),
    ("service.model.cli", "model"),
    ("service.cluster.cli", "cluster"),
)

for _module, _name in SUBCOMMANDS:
    _sub = importlib.import_module(_module).app
    app.add_typer(_sub, name=_name)


@app.command()
def version() -> None:
    """Print the ztml version and the versions of its key components."""
    from service.toolchain.opa import OPA_VERSION

    typer.echo(f"ztml {metadata.version('ztml')}")
    for dist in ("bentoml", "torch", "pulumi", "pulumi-kubernetes", "cryptography"):
        try:
            typer.echo(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            typer.echo(f"{dist} (not installed)")
    typer.echo(f"opa {OPA_VERSION} (pinned)")


app.command()(doctor)
app.command("up")(up)
app.command("down")(down)


def main() -> None:
    """Run the CLI (used by ``python -m service.cli.main``)."""
    app()


if __name__ == "__main__":
    main()
