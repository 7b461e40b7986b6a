"""Rich rendering of ledger contents and verification reports for ``ztml ledger``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from service.ledger.ledger import Ledger
from service.ledger.rules import ModelState
from service.ledger.verify import VerifyReport


def short_digest(digest: str | None) -> str:
    """The first 12 hex digits of a digest, for tables."""
    return "-" if digest is None else digest[:19] + "…"


def robust_summary(evaluation: dict[str, Any]) -> str:
    """One line per robust result: attack, epsilon, steps, restarts and accuracy."""
    parts = [
        f"{r['attack']} ε={r['epsilon']} {r['steps']} steps×{r.get('restarts', '?')}: "
        f"{r['accuracy']:.3f}"
        for r in evaluation.get("robust", [])
    ]
    return "; ".join(parts) or "-"


def models_table(models: list[ModelState]) -> Table:
    """A table of models with their labels, status and latest evaluation."""
    table = Table(title="models in the ledger (unverified view; run `ztml ledger verify`)")
    for column in ("digest", "name", "version", "status", "clean acc", "robust", "trainer"):
        table.add_column(column)
    colors = {"registered": "yellow", "approved": "green", "revoked": "red"}
    for state in models:
        latest = state.evaluations[-1]
        table.add_row(
            short_digest(state.digest),
            state.name,
            state.version,
            f"[{colors[state.status]}]{state.status}[/]",
            f"{latest['clean_accuracy']:.3f}",
            robust_summary(latest),
            state.register.identity,
        )
    return table


def model_table(state: ModelState, ledger: Ledger) -> Table:
    """A table of one model's records, oldest first."""
    table = Table(title=f"{state.name} {state.version} — {state.digest} — {state.status}")
    for column in ("seq", "type", "time", "signer", "key id", "details"):
        table.add_column(column)
    for record in ledger.history(state.digest):
        payload = record.payload
        details = {
            "register": lambda p: (
                f"{p['artifact']['format']}, {p['artifact']['size']} bytes, code "
                f"{p['code_revision']}, data {short_digest(p['training_data_digest'])}, "
                f"{robust_summary(p['evaluation'])}"
            ),
            "evaluate": lambda p: robust_summary(p["evaluation"]),
            "approve": lambda p: p["comment"] or "-",
            "revoke": lambda p: p["reason"],
        }[record.type](payload)
        table.add_row(
            str(record.seq), record.type, record.time, record.identity, record.key_id, details
        )
    return table


def report_lines(report: VerifyReport, where: str) -> list[str]:
    """The lines ``ztml ledger verify`` prints for an intact chain (rich markup).

    The first says how far the ledger is proven complete: "intact up to the newest
    signed checkpoint (seq N)"; records after it are named as unproven.
    """
    statuses = list(report.models.values())
    summary = ", ".join(f"{statuses.count(s)} {s}" for s in ("registered", "approved", "revoked"))
    head = "empty" if report.head_seq is None else f"head seq {report.head_seq} {report.head_hash}"
    tree = report.tree
    details = (
        f"{where}: {report.count} records, {head}; models: {summary}; {report.anchors} "
        f"anchors; {len(report.key_ids)} signing keys"
        + (f"; reaches the {report.checked_head.source}" if report.checked_head else "")
    )
    if report.count == 0:
        return [f"[green]ledger intact[/green] (empty): {details}"]
    if tree.checkpoint is None:
        lines = [
            f"[yellow]ledger chain intact but unproven[/yellow]: no signed checkpoint covers "
            f"any record: {details}",
            f"[yellow]unproven:[/yellow] seq 0..{report.count - 1} (a ledger of an earlier "
            "version? run `ztml ledger upgrade`)",
        ]
    else:
        cp = tree.checkpoint
        signers = ", ".join(s.name for s in cp.note.signatures if s.name != cp.origin)
        lines = [
            f"[green]ledger intact up to the newest signed checkpoint (seq {cp.seq})[/green]: "
            f"{details}; checkpoint {cp.origin} size {cp.size}"
            + (f", cosigned by {signers}" if signers else "")
        ]
        if report.unproven:
            lines.append(
                f"[yellow]unproven:[/yellow] {report.unproven} record(s) after it, seq "
                f"{cp.size}..{report.count - 1}, are not covered by a signed checkpoint"
            )
    if tree.seen is not None:
        lines.append(
            f"consistent with the checkpoint this verifier saw before (size {tree.seen.size})"
        )
    return lines


def print_report(console: Console, report: VerifyReport, where: str) -> None:
    """Print what an intact ledger holds and how far it is proven."""
    for line in report_lines(report, where):
        console.print(line, highlight=False)
