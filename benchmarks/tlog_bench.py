"""Merkle proofs and checkpoints: proof rates, checkpoint cost per append, append rates.

Each figure is printed beside a baseline measured in the same run, and the ratio:

1. inclusion and consistency proof generation (``Prover`` over a real ledger's records)
   and verification (ztml's verifier and the standalone ``scripts/tlog-verify``, loaded
   in-process) vs hashing the same number of tree nodes with bare SHA-256;
2. the checkpoint work each ledger append does (extend the frontier, compute the root,
   sign a C2SP note) vs one bare Ed25519 signature;
3. ledger appends (SQLite, WAL, FULL sync; each signs a checkpoint in its transaction)
   vs plain INSERTs of the same rows (target >= 0.5x, as in ``ledger_bench``); audit
   appends (tree frontier, tree checkpoints every 1,000 events) vs plain JSON lines
   (target >= 0.5x, as in ``audit_bench``).

Run: ``.venv/bin/python -m benchmarks.tlog_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import importlib.util
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.audit_bench import audit_append, make_events, plain_append  # noqa: E402
from benchmarks.ledger_bench import register_model, sqlite_append_rates  # noqa: E402
from service.chain.merkle import Frontier, leaf_hash, verify_consistency, verify_inclusion  # noqa: E402
from service.chain.tlog import TreeCheckpoint  # noqa: E402
from service.keys.store import Signer  # noqa: E402
from service.ledger import Ledger, open_ledger  # noqa: E402
from service.ledger.checkpoints import Prover  # noqa: E402

console = Console()


def _rate(count: int, work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def _best(repeat: int, count: int, work: Callable[[], Any]) -> float:
    return max(_rate(count, work) for _ in range(repeat))


def _tlog_verify() -> ModuleType:
    path = ROOT / "scripts" / "tlog-verify"
    loader = importlib.machinery.SourceFileLoader("tlog_verify", str(path))
    spec = importlib.util.spec_from_loader("tlog_verify", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _fill(ledger: Ledger, signer: Signer, count: int) -> None:
    for n in range(count):
        register_model(ledger, signer, n)


def _bare_hashes(nodes: int) -> Callable[[], None]:
    left, right = os.urandom(32), os.urandom(32)

    def work() -> None:
        for _ in range(nodes):
            hashlib.sha256(b"\x01" + left + right).digest()

    return work


def bench_proofs(tmp: Path, count: int, rows: list[list[str]]) -> tuple[Ledger, Signer]:
    signer = Signer("trainer@bench", Ed25519PrivateKey.generate())
    ledger = open_ledger(tmp / "proofs.db")
    _fill(ledger, signer, count)
    prover = Prover(list(ledger.records()))
    newest = ledger.checkpoint_at()
    rng = random.Random(1)
    seqs = [rng.randrange(count) for _ in range(2000)]
    olds = [rng.randint(1, count - 1) for _ in range(2000)]
    inclusion = [prover.tree.inclusion_proof(s, count) for s in seqs]
    consistency = [prover.tree.consistency_proof(o, count) for o in olds]
    nodes_in = sum(len(p) for p in inclusion) // len(inclusion)
    nodes_co = sum(len(p) for p in consistency) // len(consistency)
    bare_in = _best(3, len(seqs), _bare_hashes(nodes_in * len(seqs)))
    bare_co = _best(3, len(olds), _bare_hashes(2 * nodes_co * len(olds)))
    gen_in = _best(3, len(seqs), lambda: [prover.inclusion(newest, s) for s in seqs])
    gen_co = _best(3, len(olds), lambda: [prover.consistency(o, newest) for o in olds])
    root, leaves = prover.tree.root(), [prover.tree.leaf(s) for s in seqs]
    old_roots = [prover.tree.root(o) for o in olds]

    def ours_in() -> None:
        for s, leaf, proof in zip(seqs, leaves, inclusion, strict=True):
            verify_inclusion(s, count, leaf, proof, root)

    def ours_co() -> None:
        for o, old_root, proof in zip(olds, old_roots, consistency, strict=True):
            verify_consistency(o, count, old_root, root, proof)

    script = _tlog_verify()

    def theirs_in() -> None:
        for s, leaf, proof in zip(seqs, leaves, inclusion, strict=True):
            script.verify_inclusion(s, count, leaf, proof, root)

    note = f"bare SHA-256, {nodes_in} nodes"
    for label, value, base, what in (
        ("inclusion proof generation", gen_in, bare_in, note),
        ("inclusion proof verification (ztml)", _best(3, len(seqs), ours_in), bare_in, note),
        (
            "inclusion proof verification (tlog-verify)",
            _best(3, len(seqs), theirs_in),
            bare_in,
            note,
        ),
        ("consistency proof generation", gen_co, bare_co, f"bare SHA-256, {2 * nodes_co} nodes"),
        (
            "consistency proof verification (ztml)",
            _best(3, len(olds), ours_co),
            bare_co,
            f"bare SHA-256, {2 * nodes_co} nodes",
        ),
    ):
        rows.append(
            [
                f"{label} ({count:,} records)",
                f"{value:,.0f} /s",
                f"{base:,.0f} /s ({what})",
                f"{value / base:.2f}x",
                "-",
            ]
        )
    return ledger, signer


def bench_checkpoint_cost(count: int, rows: list[list[str]]) -> None:
    signer = Signer("approver@bench", Ed25519PrivateKey.generate())
    frontier = Frontier.of(leaf_hash(n.to_bytes(8, "big")) for n in range(count))
    leaf = leaf_hash(b"the next record")
    n = 2000

    def checkpoint() -> None:
        for _ in range(n):
            grown = frontier.append(leaf)
            TreeCheckpoint.create(
                origin="ztml.local/ledger/bench", size=grown.size, root=grown.root(), signer=signer
            )
            grown.to_text()

    def sign() -> None:
        for _ in range(n):
            signer.sign(b"ztml.local/ledger/bench\n1\nAAAA\n")

    ours, base = _best(3, n, checkpoint), _best(3, n, sign)
    rows.append(
        [
            f"checkpoint per append (tree of {count:,})",
            f"{1e6 / ours:,.1f} µs",
            f"{1e6 / base:,.1f} µs (one Ed25519 signature)",
            f"{base / ours:.2f}x",
            "-",
        ]
    )


def bench_ledger_appends(tmp: Path, count: int, rows: list[list[str]]) -> None:
    rate, base = sqlite_append_rates(tmp, count)
    rows.append(
        [
            "ledger append + checkpoint (SQLite, FULL)",
            f"{rate:,.0f} rec/s",
            f"{base:,.0f} rec/s (plain INSERT)",
            f"{rate / base:.2f}x",
            ">= 0.5x",
        ]
    )


def bench_audit_appends(tmp: Path, count: int, rows: list[list[str]]) -> None:
    signer = Signer("audit@bench", Ed25519PrivateKey.generate())
    events = make_events(count)
    ours = max(audit_append(tmp / f"audit{i}", signer, events, "checkpoint") for i in range(3))
    base = max(plain_append(tmp / f"plain{i}.jsonl", events) for i in range(3))
    rows.append(
        [
            "audit append (tree, checkpoint every 1,000)",
            f"{ours:,.0f} ev/s",
            f"{base:,.0f} ev/s (plain JSON lines)",
            f"{ours / base:.2f}x",
            ">= 0.5x",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a short run")
    args = parser.parse_args()
    records, appends, events = (1000, 200, 20_000) if args.quick else (5000, 1000, 100_000)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="ztml-tlog-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with console.status("proofs"):
            ledger, _ = bench_proofs(tmp, records, rows)
            ledger.close()
        with console.status("checkpoint cost"):
            bench_checkpoint_cost(records, rows)
        with console.status("ledger appends"):
            bench_ledger_appends(tmp, appends, rows)
        with console.status("audit appends"):
            bench_audit_appends(tmp, events, rows)
    table = Table(
        title=f"Merkle proofs and checkpoints ({'quick' if args.quick else 'full'}; "
        f"{os.cpu_count()} CPUs, shared machine)"
    )
    for column in ("measure", "ztml", "baseline (same run)", "ratio", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
