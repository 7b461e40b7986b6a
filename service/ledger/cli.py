"""``ztml ledger``: register, approve, revoke, show, verify and export model provenance.

Defaults: the ledger is ``$ZTML_HOME/ledger.db`` (``$ZTML_LEDGER_URL`` or ``--ledger``
override it; ``postgresql://...`` selects PostgreSQL). ``register`` and ``evaluate`` sign
with ``$ZTML_HOME/keys/trainer.key`` as ``trainer@<hostname>``; ``approve``, ``revoke``
and ``checkpoint`` with ``$ZTML_HOME/keys/approver.key`` as ``approver@<hostname>``.
Verification trusts the public keys ``$ZTML_HOME/keys/*.pub`` unless ``--trust DIR``, and
keeps the newest checkpoint it accepted in ``$ZTML_HOME/seen-checkpoints.json``
(``--state FILE``) to detect a ledger cut back or rolled back since.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from service.chain.core import Checkpoint
from service.chain.errors import ChainError, NoteError
from service.chain.note import Verifier
from service.chain.seen import SeenCheckpoints, default_seen_path
from service.chain.tlog import TreeCheckpoint, parse_witness_keys
from service.console import err_console, fail, work_progress
from service.console.state import NoStateOpt, StateOpt, kept_checkpoints
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
    typer.Option(
        "--checkpoint",
        help="A signed checkpoint (note, or the JSON of earlier versions) the ledger must reach.",
    ),
]
WitnessOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--witness", help="A witness vkey (cosignature/v1) that must have cosigned; repeatable."
    ),
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
            text = checkpoint.read_text(encoding="utf-8")
            if text.lstrip().startswith("{"):
                return Checkpoint.from_dict(json.loads(text))
            return TreeCheckpoint.parse(text)
        except (OSError, ValueError, AttributeError, NoteError) as err:
            raise fail(
                f"Cannot read checkpoint {checkpoint}: {err}. Pass the note written by "
                "`ztml ledger checkpoint --out FILE`."
            ) from None
    if expect_head is not None:
        seq, _, head = expect_head.partition(":")
        if not seq.isdigit() or len(head) != 64:
            raise fail(f"--expect-head {expect_head!r} must be SEQ:HASH (64 hex digits).")
        return ExpectedHead(int(seq), head.lower(), f"expected head {expect_head}")
    return None


def _witnesses(vkeys: list[str] | None) -> list[Verifier]:
    try:
        return parse_witness_keys(vkeys or [])
    except NoteError as err:
        raise fail(f"--witness: {err}") from None


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
    state: StateOpt = None,
    no_state: NoStateOpt = False,
    witness: WitnessOpt = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Also fail when records follow the newest checkpoint.")
    ] = False,
    ledger: LedgerOpt = None,
) -> None:
    """Verify every hash, link, signature, time and rule, and the signed checkpoints.

    Prints "intact up to the newest signed checkpoint (seq N)" and names the records
    after it as unproven. Exits 0 only for an intact chain (with --strict: only when
    every record is proven).
    """
    with _errors():
        store = _trust(trust)
    expect = _expectation(checkpoint, expect_head)
    seen = kept_checkpoints(state, no_state)
    witnesses = _witnesses(witness)
    with _errors(), _open(ledger) as opened:
        report = _with_progress(
            opened.count(),
            "verifying",
            lambda step: opened.verify(
                store, expect=expect, progress=step, seen=seen, witnesses=witnesses
            ),
        )
        print_report(console, report, opened.url)
    if strict and report.unproven:
        raise fail(f"{report.unproven} record(s) are not covered by a signed checkpoint.")


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
    witness: WitnessOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Export {"verified", "records", "checkpoint"} as canonical JSON.

    "verified" is true only after verifying; "checkpoint" is the newest signed
    checkpoint note (with --witness: the newest cosigned by every witness given), which
    the deploy gate and the Pulumi program require to cover the records they rely on.
    Nothing is written when verification fails.
    """
    with _errors():
        store = None if no_verify else _trust(trust)
    expect = _expectation(checkpoint, expect_head)
    witnesses = _witnesses(witness)
    with _errors(), _open(ledger) as opened:
        document = _with_progress(
            opened.count(),
            "exporting",
            lambda step: opened.export(store, expect=expect, progress=step, witnesses=witnesses),
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
    witness: WitnessOpt = None,
) -> None:
    """Verify an exported ledger offline (its own 'verified' flag is not trusted)."""
    with _errors():
        store = _trust(trust)
    expect = _expectation(checkpoint, expect_head)
    witnesses = _witnesses(witness)
    try:
        text = file.read_bytes()
    except OSError as err:
        raise fail(f"Cannot read export {file}: {err.strerror}.") from None
    with _errors():
        report = verify_export_text(text, store, expect=expect, witnesses=witnesses)
        print_report(console, report, str(file))


@app.command("checkpoint")
def checkpoint_cmd(
    out: Annotated[Path | None, typer.Option("--out", help="Write here (default stdout).")] = None,
    key: KeyOpt = None,
    identity: IdentityOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Print the checkpoint of the whole ledger, signing one if none covers every record.

    Every append already signs one; keep it to check the ledger later (verify
    --checkpoint FILE). Signed with $ZTML_HOME/keys/approver.key unless --key.
    """
    with _errors(), _open(ledger) as opened:
        latest = opened.newest_checkpoint()
        if latest is not None and TreeCheckpoint.parse(latest).size == opened.count():
            signed = TreeCheckpoint.parse(latest)
        else:
            signed = opened.checkpoint(Signer.for_role("approver", key=key, identity=identity))
    _emit(signed.text, out, f"checkpoint of size {signed.size} (seq {signed.seq})")


def _emit(text: str, out: Path | None, what: str) -> None:
    if out is None:
        typer.echo(text, nl=False)
    else:
        _write_atomic(out, text.encode())
        err_console.print(f"{what} written to {out}", highlight=False)


prove_app = typer.Typer(
    help="Print Merkle proofs that `scripts/tlog-verify` (or any RFC 9162 verifier) checks.",
    no_args_is_help=True,
)
app.add_typer(prove_app, name="prove")


@prove_app.command("inclusion")
def prove_inclusion(
    seq: Annotated[int, typer.Argument(help="The record to prove.", min=0)],
    size: Annotated[
        int | None, typer.Option("--size", help="Prove against this checkpoint (default newest).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write here (default stdout).")] = None,
    ledger: LedgerOpt = None,
) -> None:
    """Prove that record SEQ is in the tree a signed checkpoint commits to."""
    with _errors(), _open(ledger) as opened:
        proof = opened.prove_inclusion(seq, size=size)
    _emit(json.dumps(proof, indent=2) + "\n", out, f"inclusion proof of seq {seq}")


@prove_app.command("consistency")
def prove_consistency(
    old: Annotated[int, typer.Argument(help="The older tree size.", min=0)],
    new: Annotated[int, typer.Argument(help="The newer tree size (a signed checkpoint).", min=1)],
    out: Annotated[Path | None, typer.Option("--out", help="Write here (default stdout).")] = None,
    ledger: LedgerOpt = None,
) -> None:
    """Prove that the tree of OLD records is a prefix of the signed tree of NEW records."""
    with _errors(), _open(ledger) as opened:
        proof = opened.prove_consistency(old, new)
    _emit(json.dumps(proof, indent=2) + "\n", out, f"consistency proof {old} -> {new}")


@app.command("vkey")
def vkey(trust: TrustOpt = None, ledger: LedgerOpt = None) -> None:
    """Print the verifier keys (vkeys) of the trusted keys under this ledger's origin.

    Give them to an independent verifier: `scripts/tlog-verify --vkey VKEY PROOF`.
    """
    with _errors():
        store = _trust(trust)
        with _open(ledger) as opened:
            origin = opened.origin()
        if origin is None:
            raise LedgerError("The ledger is empty; it has no origin yet.")
        for key in store.keys.values():
            typer.echo(Verifier(origin, 0x01, key).vkey())


@app.command("upgrade")
def upgrade(
    trust: TrustOpt = None,
    key: KeyOpt = None,
    identity: IdentityOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Upgrade a ledger written by an earlier version: verify it, then checkpoint it.

    No record is changed or lost: the checkpoints table is added and every record is
    covered by a checkpoint signed with $ZTML_HOME/keys/approver.key (or --key).
    """
    with _errors():
        store = _trust(trust)
        signer = Signer.for_role("approver", key=key, identity=identity)
        with _open(ledger) as opened:
            before = opened.newest_checkpoint()
            signed = opened.upgrade(signer, store)
            report = opened.verify(store)
        state = "already covered" if before == signed.text else "checkpoint signed"
        console.print(
            f"[green]ledger upgraded[/green]: {report.count} records kept, {state} at size "
            f"{signed.size} ({signed.origin})",
            highlight=False,
        )
        print_report(console, report, opened.url)


@app.command("cosign")
def cosign_cmd(
    name: Annotated[str, typer.Option("--name", help="The witness's key name, e.g. w.example/1.")],
    key: Annotated[Path, typer.Option("--key", help="The witness's private key.")],
    trust: TrustOpt = None,
    state: StateOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Witness the newest checkpoint with a second key (a cosignature/v1 line).

    The witness verifies the ledger, checks that it extends what this witness cosigned
    before (its --state), adds its cosignature and prints its vkey for `verify --witness`.
    """
    with _errors():
        store = _trust(trust)
        witness = Signer.from_file(key, name)
        seen = SeenCheckpoints(
            state or default_seen_path().with_name(f"witness-{name.replace('/', '_')}.json")
        )
        with _open(ledger) as opened:
            cosigned = opened.cosign(
                name=name, signer=witness, trust=store, seen=seen, timestamp=int(time.time())
            )
    console.print(
        f"[green]cosigned[/green] checkpoint of size {cosigned.size} as {name}; witness vkey:",
        highlight=False,
    )
    typer.echo(Verifier(name, 0x04, witness.public_key).vkey())
