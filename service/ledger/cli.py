"""``ztml ledger``: register, approve, revoke, show, verify and export model provenance.

Defaults: the ledger is ``$ZTML_HOME/ledger.db`` (``$ZTML_LEDGER_URL`` or ``--ledger``
override it; ``postgresql://...`` selects PostgreSQL). ``register`` and ``evaluate`` sign
with ``$ZTML_HOME/keys/trainer.key`` as ``trainer@<hostname>``; ``approve``, ``revoke``
and ``checkpoint`` with ``$ZTML_HOME/keys/approver.key`` as ``approver@<hostname>``.
Verification trusts the public keys ``$ZTML_HOME/keys/*.pub`` unless ``--trust DIR``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from service.chain.core import Checkpoint
from service.chain.errors import ChainError
from service.console import err_console, fail, work_progress
from service.keys.canonical import canonical_json
from service.keys.errors import KeyError_
from service.keys.store import Signer, TrustStore
from service.ledger.display import model_table, models_table, print_report
from service.ledger.errors import LedgerError, LedgerIntegrityError
from service.ledger.factory import default_ledger_url, init_ledger, open_ledger
from service.ledger.ledger import Ledger
from service.ledger.metrics import load_evaluation
from service.ledger.verify import ExpectedHead, verify_export_text
from service.model.errors import ModelError
from service.model.register import register_model
from service.toolchain.paths import ztml_home

app = typer.Typer(
    help=(
        "The signed, hash-chained model provenance ledger: one record per model event "
        "(register, evaluate, approve, revoke). Models are identified by artifact digest."
    ),
    no_args_is_help=True,
)
console = Console()

LedgerOpt = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        envvar="ZTML_LEDGER_URL",
        help="Ledger: a path, sqlite:///abs/path or postgresql://... "
        "(default $ZTML_HOME/ledger.db).",
        show_default=False,
    ),
]
TrustOpt = Annotated[
    Path | None,
    typer.Option("--trust", help="Directory of trusted *.pub keys (default $ZTML_HOME/keys)."),
]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="Private key to sign with.")]
IdentityOpt = Annotated[str | None, typer.Option("--identity", help="Signer identity.")]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", help="A signed ledger checkpoint the ledger must reach."),
]
ExpectHeadOpt = Annotated[
    str | None,
    typer.Option("--expect-head", help="SEQ:HASH the ledger must contain (detects truncation)."),
]


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the ledger's and the key store's errors into a red message and exit 1."""
    try:
        yield
    except LedgerIntegrityError as err:
        err_console.print(
            f"[red]ledger verification FAILED at {err.position}:[/red] {err.reason}",
            highlight=False,
        )
        raise typer.Exit(1) from None
    except (LedgerError, KeyError_, ChainError) as err:
        raise fail(str(err)) from None


def _trust(directory: Path | None) -> TrustStore:
    return TrustStore.from_trust_directory(directory or ztml_home() / "keys")


def _expectation(checkpoint: Path | None, expect_head: str | None) -> Any:
    if checkpoint is not None and expect_head is not None:
        raise fail("Give either --checkpoint or --expect-head, not both.")
    if checkpoint is not None:
        try:
            return Checkpoint.from_dict(json.loads(checkpoint.read_text()))
        except (OSError, ValueError, AttributeError) as err:
            raise fail(
                f"Cannot read checkpoint {checkpoint}: {err}. Pass the JSON file written by "
                "`ztml ledger checkpoint --out FILE`."
            ) from None
    if expect_head is not None:
        seq, _, head = expect_head.partition(":")
        if not seq.isdigit() or len(head) != 64:
            raise fail(f"--expect-head {expect_head!r} must be SEQ:HASH (64 hex digits).")
        return ExpectedHead(int(seq), head.lower(), f"expected head {expect_head}")
    return None


def _open(url: str | None, *, create: bool = False) -> Ledger:
    return open_ledger(url or default_ledger_url(), create=create)


def _with_progress(total: int, label: str, work: Callable[[Callable[[int], None]], Any]) -> Any:
    with work_progress(label, disable=total == 0) as progress:
        task = progress.add_task(label, total=total)
        return work(lambda n: progress.advance(task, n))


@app.command("init")
def init(ledger: LedgerOpt = None) -> None:
    """Create the ledger database and schema (refuses an existing non-empty ledger)."""
    with _errors():
        created = init_ledger(ledger or default_ledger_url())
        console.print(f"[green]ledger ready[/green] at {created.url} (0 records)")
        created.close()


@app.command("register")
def register(
    artifact: Annotated[Path, typer.Argument(help="The model artifact file to register.")],
    metrics: Annotated[Path, typer.Option("--metrics", help="metrics.json from training.")],
    name: Annotated[str | None, typer.Option(help="Name label (default: from metrics).")] = None,
    version: Annotated[
        str | None, typer.Option(help="Version label (default: from metrics).")
    ] = None,
    key: KeyOpt = None,
    identity: IdentityOpt = None,
    ledger: LedgerOpt = None,
    oms_signers: Annotated[
        Path | None,
        typer.Option("--oms-signers", help="Trusted OMS signer keys (default: see README)."),
    ] = None,
) -> None:
    """Verify ARTIFACT and register it with its training provenance and evaluation.

    The model's OMS bundle (model.sig beside it) is verified against the trusted OMS
    signer keys, the artifact loaded and verified, and the metrics checked against it,
    before anything is signed (the same path as ``ztml model register``). Signed with
    $ZTML_HOME/keys/trainer.key as trainer@<hostname> unless --key/--identity.
    """
    try:
        record = register_model(
            artifact,
            metrics,
            ledger_url=ledger,
            key_path=key,
            identity=identity,
            name=name,
            version=version,
            oms_signers=oms_signers,
        )
    except ModelError as err:
        raise fail(str(err)) from None
    console.print(
        f"[green]registered[/green] {record.model_digest} as {record.payload['name']} "
        f"{record.payload['version']} (seq {record.seq}, signed by {record.identity} "
        f"{record.key_id})"
    )


@app.command("evaluate")
def evaluate(
    digest: Annotated[str, typer.Argument(help="Model digest (or a unique prefix).")],
    metrics: Annotated[
        Path, typer.Option("--metrics", help="metrics.json or an evaluation JSON object.")
    ],
    key: KeyOpt = None,
    identity: IdentityOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Record new evaluation results for a registered model (signed as the trainer)."""
    with _errors():
        evaluation = load_evaluation(metrics)
        signer = Signer.for_role("trainer", key=key, identity=identity)
        with _open(ledger) as opened:
            record = opened.evaluate(opened.resolve(digest), evaluation, signer=signer)
        console.print(
            f"[green]evaluation recorded[/green] for {record.model_digest} (seq {record.seq})"
        )


@app.command("approve")
def approve(
    digest: Annotated[str, typer.Argument(help="Model digest (or a unique prefix).")],
    comment: Annotated[str, typer.Option(help="Why it is approved.")] = "",
    key: KeyOpt = None,
    identity: IdentityOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Approve a registered model for serving (not by its trainer: separation of duties).

    Signed with $ZTML_HOME/keys/approver.key as approver@<hostname> unless --key/--identity.
    """
    with _errors():
        signer = Signer.for_role("approver", key=key, identity=identity)
        with _open(ledger) as opened:
            record = opened.approve(opened.resolve(digest), signer=signer, comment=comment)
        console.print(
            f"[green]approved[/green] {record.model_digest} (seq {record.seq}, by "
            f"{record.identity} {record.key_id})"
        )


@app.command("revoke")
def revoke(
    digest: Annotated[str, typer.Argument(help="Model digest (or a unique prefix).")],
    reason: Annotated[str, typer.Option(help="Why it is revoked (required).")],
    key: KeyOpt = None,
    identity: IdentityOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Revoke a model: it may no longer be approved or served."""
    with _errors():
        signer = Signer.for_role("approver", key=key, identity=identity)
        with _open(ledger) as opened:
            record = opened.revoke(opened.resolve(digest), signer=signer, reason=reason)
        console.print(f"[yellow]revoked[/yellow] {record.model_digest} (seq {record.seq})")


@app.command("show")
def show(
    digest: Annotated[
        str | None, typer.Argument(help="Show one model's records (digest or prefix).")
    ] = None,
    ledger: LedgerOpt = None,
) -> None:
    """List models and their status (registered/approved/revoked), or one model's records."""
    with _errors(), _open(ledger) as opened:
        if digest is None:
            models = opened.models()
            if not models:
                console.print(f"no models in {opened.url}")
                return
            console.print(models_table(models))
        else:
            console.print(model_table(opened.model(opened.resolve(digest)), opened))


@app.command("verify")
def verify(
    trust: TrustOpt = None,
    checkpoint: CheckpointOpt = None,
    expect_head: ExpectHeadOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Verify every hash, link, signature and rule; exit 0 only for an intact ledger."""
    with _errors():
        store = _trust(trust)
    expect = _expectation(checkpoint, expect_head)
    with _errors(), _open(ledger) as opened:
        report = _with_progress(
            opened.count(),
            "verifying",
            lambda step: opened.verify(store, expect=expect, progress=step),
        )
        print_report(console, report, opened.url)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command("export")
def export(
    out: Annotated[Path | None, typer.Option("--out", help="Write here (default stdout).")] = None,
    trust: TrustOpt = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Export without verifying (verified: false).")
    ] = False,
    checkpoint: CheckpointOpt = None,
    expect_head: ExpectHeadOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Export {"verified", "records"} as canonical JSON; verified only after verifying.

    Nothing is written when verification fails.
    """
    with _errors():
        store = None if no_verify else _trust(trust)
    expect = _expectation(checkpoint, expect_head)
    with _errors(), _open(ledger) as opened:
        document = _with_progress(
            opened.count(),
            "exporting",
            lambda step: opened.export(store, expect=expect, progress=step),
        )
    data = canonical_json(document) + b"\n"
    if out is None:
        typer.echo(data.decode(), nl=False)
    else:
        _write_atomic(out, data)
        state = "verified" if document["verified"] else "[yellow]unverified[/yellow]"
        err_console.print(f"exported {len(document['records'])} records ({state}) to {out}")


@app.command("verify-export")
def verify_export_file(
    file: Annotated[Path, typer.Argument(help="An export written by `ztml ledger export`.")],
    trust: TrustOpt = None,
    checkpoint: CheckpointOpt = None,
    expect_head: ExpectHeadOpt = None,
) -> None:
    """Verify an exported ledger offline (its own 'verified' flag is not trusted)."""
    with _errors():
        store = _trust(trust)
    expect = _expectation(checkpoint, expect_head)
    try:
        text = file.read_bytes()
    except OSError as err:
        raise fail(f"Cannot read export {file}: {err.strerror}.") from None
    with _errors():
        report = verify_export_text(text, store, expect=expect)
        print_report(console, report, str(file))


@app.command("checkpoint")
def checkpoint_cmd(
    out: Annotated[Path | None, typer.Option("--out", help="Write here (default stdout).")] = None,
    key: KeyOpt = None,
    identity: IdentityOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Sign the current head; keep it to detect truncation later (verify --checkpoint).

    Signed with $ZTML_HOME/keys/approver.key unless --key.
    """
    with _errors():
        signer = Signer.for_role("approver", key=key, identity=identity)
        with _open(ledger) as opened:
            signed = opened.checkpoint(signer)
    data = json.dumps(signed.to_dict(), indent=2) + "\n"
    if out is None:
        typer.echo(data, nl=False)
    else:
        _write_atomic(out, data.encode())
        err_console.print(f"checkpoint of seq {signed.seq} written to {out}")
