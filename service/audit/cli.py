"""``ztml audit``: verify, tail, recover, prove and upgrade the hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from service.audit.anchors import AnchorSink, FileAnchorSink, LedgerAnchorSink, default_anchors_path
from service.audit.errors import (
    AuditDirError,
    AuditError,
    AuditTrustError,
    AuditVerificationError,
)
from service.audit.proofs import log_prover, upgrade_log
from service.audit.reader import TailRecord, follow, last_records
from service.audit.recover import find_incomplete, remove_incomplete
from service.audit.segments import check_audit_dir, list_logs
from service.audit.verify import AuditReport, audit_bytes, verify_audit_dir
from service.chain.errors import ChainError
from service.chain.note import ED25519, Verifier
from service.chain.tlog import audit_origin
from service.console import err_console, fail, work_progress
from service.console.state import NoStateOpt, StateOpt, kept_checkpoints
from service.keys.errors import KeyError_
from service.keys.store import Signer, TrustStore
from service.toolchain.paths import ztml_home

app = typer.Typer(
    help="Verify, tail and recover the hash-chained, signed audit log.", no_args_is_help=True
)
console = Console()

DirArg = Annotated[Path | None, typer.Argument(help="Audit directory (default: $ZTML_HOME/audit).")]
TrustOpt = Annotated[
    Path | None,
    typer.Option("--trust", help="Directory of trusted *.pub keys (default $ZTML_HOME/keys)."),
]
AnchorsOpt = Annotated[
    Path | None,
    typer.Option("--anchors", help="Anchors file (default: <DIR>-anchors.jsonl next to DIR)."),
]


def _load_trust(trust_dir: Path | None) -> TrustStore:
    return TrustStore.from_trust_directory(
        trust_dir or ztml_home() / "keys", needed="the audit public key (audit.pub)"
    )


def _ledger_sink(url: str, trust: TrustStore) -> tuple[AnchorSink, Any]:
    from service.ledger import LedgerError, open_ledger

    try:
        ledger = open_ledger(url, create=False)
        ledger.verify(trust)
    except LedgerError as err:
        raise AuditTrustError(f"The ledger at {url} cannot be used for anchors: {err}") from None
    return LedgerAnchorSink(ledger), ledger


def _summary_table(report: AuditReport) -> Table:
    table = Table(title=f"audit log {report.directory}")
    for column in (
        "log",
        "segments",
        "events",
        "last seq",
        "checkpoints",
        "signed to",
        "proven to",
        "anchored to",
    ):
        table.add_column(column, justify="left" if column == "log" else "right")
    for log in report.logs:
        table.add_row(
            log.log_id,
            str(log.segments),
            str(log.events),
            str(log.last_seq),
            str(log.checkpoints),
            str(log.signed_seq) if log.signed_seq >= 0 else "-",
            str(log.tree_signed_seq) if log.tree_signed_seq >= 0 else "-",
            str(log.anchored_seq) if log.anchored_seq >= 0 else "-",
        )
    return table


@app.command("verify")
def verify(
    directory: DirArg = None,
    trust: TrustOpt = None,
    anchors: AnchorsOpt = None,
    ledger: Annotated[
        str | None,
        typer.Option("--ledger", help="Check against the checkpoints anchored in this ledger."),
    ] = None,
    no_anchors: Annotated[
        bool,
        typer.Option(
            "--no-anchors", help="Verify without anchors (a cut-off tail goes unnoticed)."
        ),
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Also fail on events after a log's last checkpoint.")
    ] = False,
    state: StateOpt = None,
    no_state: NoStateOpt = False,
) -> None:
    """Check every hash, link, sequence number, checkpoint signature and anchor.

    Exits 0 only for an intact log; otherwise names the first bad record (file, line,
    seq and what is wrong). An incomplete last line (a crash mid-write) is reported, never
    repaired: see `ztml audit recover`. Each log must still hold the newest checkpoint
    this verifier accepted for it before (--state), so a log cut back to an older
    consistent state is refused even when its later anchors were removed too.
    """
    audit_dir = directory or ztml_home() / "audit"
    if sum([anchors is not None, ledger is not None, no_anchors]) > 1:
        raise fail("Use at most one of --anchors, --ledger and --no-anchors.")
    seen = kept_checkpoints(state, no_state)
    opened: Any = None
    try:
        check_audit_dir(audit_dir)
        trust_store = _load_trust(trust)
        sink: AnchorSink | None = None
        if ledger is not None:
            sink, opened = _ledger_sink(ledger, trust_store)
        elif not no_anchors:
            path = anchors or default_anchors_path(audit_dir)
            if not path.is_file():
                raise fail(
                    f"Anchors file {path} not found. Pass the file the service anchors to "
                    "(--anchors FILE), --ledger URL, or --no-anchors to verify without (then "
                    "a cut-off tail or deleted newest segment is undetectable)."
                )
            sink = FileAnchorSink(path)
        total = audit_bytes(audit_dir)
        with work_progress("verifying", unit="bytes") as progress:
            task = progress.add_task("verify", total=total)
            report = verify_audit_dir(
                audit_dir,
                trust_store,
                anchors=sink,
                strict=strict,
                progress=lambda n: progress.advance(task, n),
                seen=seen,
            )
    except AuditVerificationError as err:
        err_console.print("[bold red]audit log verification FAILED[/bold red]", highlight=False)
        if err.file is not None:
            err_console.print(f"  file: {err.file}", highlight=False)
        if err.log is not None:
            err_console.print(f"  log:  {err.log}", highlight=False)
        if err.line is not None:
            err_console.print(f"  line: {err.line}", highlight=False)
        if err.seq is not None:
            err_console.print(f"  seq:  {err.seq}", highlight=False)
        err_console.print(f"  what: {err.reason}", highlight=False)
        raise typer.Exit(1) from None
    except (AuditError, KeyError_) as err:
        raise fail(str(err)) from None
    finally:
        if opened is not None:
            opened.close()
    console.print(_summary_table(report))
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    for log in report.logs:
        if log.last_seq < 0:
            continue
        proven = log.tree_signed_seq
        line = (
            f"log {log.log_id}: intact up to the newest signed checkpoint (seq {proven})"
            if proven >= 0
            else f"log {log.log_id}: chain intact but no tree checkpoint (run `ztml audit upgrade`)"
        )
        if log.last_seq > proven:
            line += f"; seq {proven + 1}..{log.last_seq} unproven"
        console.print(line, highlight=False)
    console.print(
        f"[green]intact:[/green] {report.events} events in {len(report.logs)} log(s), "
        f"{report.checkpoints} signed checkpoint(s)",
        highlight=False,
    )


def _row(record: TailRecord) -> list[str]:
    event = record.event
    decision = event.get("decision")
    if isinstance(decision, dict):
        verdict = "[green]allow[/green]" if decision.get("allow") else "[red]deny[/red]"
        reasons = decision.get("reasons") or []
        if reasons:
            verdict += " " + "; ".join(str(r) for r in reasons)[:60]
    else:
        verdict = "-"
    status = event.get("status")
    return [
        str(event.get("time", "")),
        f"{record.log_id[-12:]}#{record.seq}",
        str(event.get("kind", "")),
        str(event.get("subject") or "-"),
        str(event.get("tenant") or "-"),
        str(event.get("action", "")),
        verdict,
        str(status),
        f"{event.get('latency_ms', 0):.1f}",
        str(event.get("client", "")),
    ]


def _table(records: list[TailRecord]) -> Table:
    table = Table(pad_edge=False)
    for column in (
        "time",
        "log#seq",
        "kind",
        "subject",
        "tenant",
        "action",
        "decision",
        "status",
        "ms",
        "client",
    ):
        table.add_column(column, no_wrap=column != "decision")
    for record in records:
        table.add_row(*_row(record))
    return table


@app.command("tail")
def tail(
    directory: DirArg = None,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="Events to show.")] = 20,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep showing new events (Ctrl-C stops).")
    ] = False,
) -> None:
    """Show the newest events of every log in the directory (not verified: see verify)."""
    audit_dir = directory or ztml_home() / "audit"
    try:
        console.print(_table(last_records(audit_dir, lines)))
        if follow_:
            for record in follow(audit_dir):
                console.print("  ".join(_row(record)))
    except AuditError as err:
        raise fail(str(err)) from None
    except KeyboardInterrupt:
        return


@app.command("recover")
def recover(
    directory: DirArg = None,
    anchors: Annotated[
        Path | None,
        typer.Option("--anchors", help="Anchors file to check too (default: <DIR>-anchors.jsonl)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report what would be removed.")
    ] = False,
) -> None:
    """Remove the incomplete last line a crash mid-write left, after saying what it removes.

    Only an incomplete final line (no newline) of a log's last segment or of the anchors
    file is removed; anything else is refused and left untouched.
    """
    audit_dir = directory or ztml_home() / "audit"
    try:
        check_audit_dir(audit_dir)
        items = find_incomplete(audit_dir, anchors_path=anchors or default_anchors_path(audit_dir))
        if not items:
            console.print("nothing to recover: every file ends with a complete line")
            return
        for item in items:
            console.print(
                f"{'would remove' if dry_run else 'removing'} incomplete last line "
                f"{item.line} of {item.path} ({len(item.data)} bytes at offset {item.offset}): "
                f"{item.preview()}",
                highlight=False,
            )
        if dry_run:
            return
        remove_incomplete(items)
    except AuditError as err:
        raise fail(str(err)) from None
    console.print(
        f"[green]removed {len(items)} incomplete line(s).[/green] Run `ztml audit verify` next.",
        highlight=False,
    )


def _log_dir(directory: Path | None, log: str) -> Path:
    audit_dir = directory or ztml_home() / "audit"
    for log_dir in list_logs(audit_dir):
        if log_dir.name == log:
            return log_dir
    raise AuditDirError(f"No log {log!r} in {audit_dir}; `ztml audit verify` lists them.")


prove_app = typer.Typer(
    help="Print Merkle proofs of one audit log for `scripts/tlog-verify`.", no_args_is_help=True
)
app.add_typer(prove_app, name="prove")
LogOpt = Annotated[str, typer.Option("--log", help="The log id (its directory name).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Write here (default stdout).")]


def _emit(proof: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(proof, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        err_console.print(f"proof written to {out}", highlight=False)


@prove_app.command("inclusion")
def prove_inclusion(
    seq: Annotated[int, typer.Argument(help="The event to prove.", min=0)],
    log: LogOpt,
    directory: DirArg = None,
    size: Annotated[
        int | None, typer.Option("--size", help="Prove against this checkpoint (default newest).")
    ] = None,
    out: OutOpt = None,
) -> None:
    """Prove that event SEQ of a log is in the tree a signed checkpoint commits to."""
    try:
        prover, checkpoints = log_prover(_log_dir(directory, log))
        if not checkpoints:
            raise AuditDirError(f"Log {log} has no tree checkpoint; run `ztml audit upgrade`.")
        checkpoint = checkpoints[max(checkpoints) if size is None else size]
        _emit(prover.inclusion(checkpoint.checkpoint, seq), out)
    except KeyError:
        raise fail(f"Log {log} has no checkpoint of size {size}.") from None
    except (AuditError, ChainError) as err:
        raise fail(str(err)) from None


@prove_app.command("consistency")
def prove_consistency(
    old: Annotated[int, typer.Argument(help="The older tree size.", min=0)],
    new: Annotated[int, typer.Argument(help="The newer tree size (a signed checkpoint).", min=1)],
    log: LogOpt,
    directory: DirArg = None,
    out: OutOpt = None,
) -> None:
    """Prove that the log's first OLD events are a prefix of its signed tree of NEW."""
    try:
        prover, checkpoints = log_prover(_log_dir(directory, log))
        if new not in checkpoints:
            raise AuditDirError(f"Log {log} has no signed checkpoint of size {new}.")
        older = checkpoints[old].checkpoint if old in checkpoints else old
        _emit(prover.consistency(older, checkpoints[new].checkpoint), out)
    except (AuditError, ChainError) as err:
        raise fail(str(err)) from None


@app.command("vkey")
def vkey(
    log: LogOpt,
    trust: TrustOpt = None,
) -> None:
    """Print the verifier keys (vkeys) of the trusted keys under a log's origin."""
    try:
        store = _load_trust(trust)
    except KeyError_ as err:
        raise fail(str(err)) from None
    for key in store.keys.values():
        typer.echo(Verifier(audit_origin(log), ED25519, key).vkey())


@app.command("upgrade")
def upgrade(
    directory: DirArg = None,
    trust: TrustOpt = None,
    anchors: AnchorsOpt = None,
    key: Annotated[Path | None, typer.Option("--key", help="The audit private key.")] = None,
) -> None:
    """Upgrade logs written by an earlier version: verify, then sign a tree checkpoint.

    Nothing is rewritten or lost: each finished log whose events are not all covered by
    a tree checkpoint gets one more checkpoint line (C2SP note, signed with the audit
    key) at the end of its last segment, anchored like any other.
    """
    audit_dir = directory or ztml_home() / "audit"
    try:
        check_audit_dir(audit_dir)
        store = _load_trust(trust)
        path = anchors or default_anchors_path(audit_dir)
        sink = FileAnchorSink(path) if path.is_file() else None
        verify_audit_dir(audit_dir, store, anchors=sink)
        signer = Signer.from_file(key or ztml_home() / "keys" / "audit.key", "audit")
        upgraded = [
            cp for log_dir in list_logs(audit_dir) if (cp := upgrade_log(log_dir, signer, sink))
        ]
        report = verify_audit_dir(audit_dir, store, anchors=sink)
    except AuditVerificationError as err:
        raise fail(f"not upgraded: verification failed at {err}") from None
    except (AuditError, KeyError_, ChainError) as err:
        raise fail(str(err)) from None
    for cp in upgraded:
        console.print(f"log {cp.log}: checkpoint of {cp.size} events signed", highlight=False)
    console.print(
        f"[green]audit log upgraded[/green]: {report.events} events in {len(report.logs)} "
        f"log(s) kept, {len(upgraded)} log(s) checkpointed",
        highlight=False,
    )
