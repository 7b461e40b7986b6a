"""Provenance ledger benchmark: verify throughput, artifact hashing, append rate.

Each figure is printed beside a baseline measured in the same run:

1. ledger verification (records/s, from SQLite and from an export) vs the bare work it
   cannot avoid on the same records: one SHA-256 link hash and one Ed25519 verification
   per record over precomputed bytes (target >= 0.5x);
2. ``hash_artifact`` on a 1 GiB file (``--quick``: 128 MiB) vs ``sha256sum`` (>= 0.8x);
3. ledger appends/s (hash chain, signature, rules, a signed checkpoint, serialized
   transaction) on SQLite and on a PostgreSQL server started for the run vs plain INSERTs
   of the same rows, one transaction each, with the same durability (SQLite: WAL,
   synchronous=FULL; PostgreSQL: its default synchronous commit) (target >= 0.5x). Each
   append is followed by the INSERT of the row it stored, so both see the same load. On
   PostgreSQL the benchmark's lone writer appends with one guarded statement, one round
   trip like the INSERT (``service/ledger/storage/known.py``); on SQLite it reads only
   the new subject's rows (``PRAGMA data_version`` shows nobody else wrote); with other
   writers an append reads under the lock first.

Run: ``.venv/bin/python -m benchmarks.ledger_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from service.keys.canonical import canonical_json  # noqa: E402
from service.keys.store import Signer, TrustStore  # noqa: E402
from service.ledger import Ledger, Record, open_ledger, verify_export_text  # noqa: E402
from service.ledger.artifact import hash_artifact  # noqa: E402
from service.ledger.records import record_from_dict  # noqa: E402
from service.model.metrics import evaluation_document, robust_entry  # noqa: E402
from service.toolchain.postgres import fresh_database, postgres_server  # noqa: E402

console = Console()
EVALUATION = evaluation_document(
    dataset="sklearn-digits/test",
    clean_accuracy=0.97,
    robust=[
        robust_entry(attack="pgd", epsilon=0.1, steps=20, restarts=2, accuracy=0.83),
        robust_entry(attack="fgsm", epsilon=0.05, steps=1, restarts=1, accuracy=0.9),
    ],
)


def _digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(n.to_bytes(8, "big")).hexdigest()


def fill(ledger: Ledger, trainer: Signer, approver: Signer, count: int) -> None:
    """Append ``count`` realistic records: registrations, evaluations, approvals."""
    n = 0
    while ledger.count() < count:
        digest = _digest(n)
        ledger.register(
            signer=trainer,
            name="digits-mlp",
            version=f"1.{n}",
            artifact={"digest": digest, "format": "safetensors", "size": 70_000 + n},
            training_data_digest=_digest(10**9),
            code_revision="4f1c2ab",
            hyperparameters={
                "lr": 0.001,
                "epochs": 30,
                "batch_size": 64,
                "defense": "pgd",
                "epsilon": 0.1,
                "pgd_steps": 10,
            },
            evaluation=EVALUATION,
        )
        if n % 2 == 0:
            ledger.evaluate(digest, EVALUATION, signer=trainer)
        ledger.approve(digest, signer=approver, comment=f"reviewed model {n}")
        n += 1


def paired(repeat: int, *works: Callable[[], Any]) -> list[float]:
    """Best time of each work, running them in turn so load changes hit all alike."""
    best = [float("inf")] * len(works)
    for _ in range(repeat):
        for i, work in enumerate(works):
            start = time.perf_counter()
            work()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def bench_verify(tmp: Path, count: int, rows: list[list[str]]) -> None:
    trainer = Signer("trainer@bench", Ed25519PrivateKey.generate())
    approver = Signer("approver@bench", Ed25519PrivateKey.generate())
    trust = TrustStore.from_public_keys([trainer.public_key, approver.public_key])
    ledger = open_ledger(tmp / "verify.db")
    fill(ledger, trainer, approver, count)
    records = ledger.export()["records"]
    text = canonical_json(records)
    # The unavoidable work, over bytes prepared in advance.
    prepared = []
    for data in records:
        record = record_from_dict(data)
        encoded = record.encoded()
        link = canonical_json({"seq": record.seq, "prev": record.prev_hash, "body": record.body()})
        prepared.append(
            (
                trust.keys[record.key_id],
                base64.b64decode(record.signature),
                encoded.signed_bytes,
                link,
            )
        )

    def bare() -> None:
        for public, signature, signed, link in prepared:
            hashlib.sha256(link).hexdigest()
            public.verify(signature, signed)

    n = len(records)
    times = paired(5, bare, lambda: ledger.verify(trust), lambda: verify_export_text(text, trust))
    baseline, from_db, from_export = (n / t for t in times)
    ledger.close()
    for label, value in (
        ("verify (SQLite ledger)", from_db),
        ("verify (export JSON)", from_export),
    ):
        rows.append(
            [
                label,
                f"{value:,.0f} rec/s",
                f"{baseline:,.0f} rec/s (Ed25519 + SHA-256 only)",
                f"{value / baseline:.2f}x",
                ">= 0.5x",
            ]
        )


def bench_hash(tmp: Path, size_mib: int, rows: list[list[str]]) -> None:
    path = tmp / "artifact.bin"
    block = os.urandom(1024 * 1024)
    with path.open("wb") as handle:
        for _ in range(size_mib):
            handle.write(block)
    expected = hash_artifact(path)  # also warms the page cache
    sha256sum_out: list[str] = []

    def tool() -> None:
        out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
        sha256sum_out.append(out.stdout.split()[0])

    ours, theirs = paired(3, lambda: hash_artifact(path), tool)
    assert expected[0] == "sha256:" + sha256sum_out[0], "digest differs from sha256sum"
    mib = size_mib
    rows.append(
        [
            f"hash_artifact ({mib} MiB)",
            f"{mib / ours:,.0f} MiB/s",
            f"{mib / theirs:,.0f} MiB/s (sha256sum)",
            f"{theirs / ours:.2f}x",
            ">= 0.8x",
        ]
    )
    path.unlink()


StoredRow = tuple[int, str, str | None, str]


def registration(n: int) -> dict[str, Any]:
    """The fields of model ``n``'s registration (the record every append benchmark writes)."""
    return {
        "name": "digits-mlp",
        "version": f"1.{n}",
        "artifact": {"digest": _digest(n), "format": "safetensors", "size": 70_000},
        "training_data_digest": _digest(10**9),
        "code_revision": "4f1c2ab",
        "hyperparameters": {"lr": 0.001, "epochs": 30},
        "evaluation": EVALUATION,
    }


def register_model(ledger: Ledger, signer: Signer, n: int) -> Record:
    """Register model ``n``."""
    return ledger.register(signer=signer, **registration(n))


def paired_appends(
    ledger: Ledger, insert: Callable[[StoredRow], None], count: int
) -> tuple[float, float]:
    """Ledger appends and plain INSERTs of the same rows, taken in turn; (rec/s, rec/s).

    Each append is followed by the plain INSERT of the row it stored, so the load of
    the shared machine (CPU, disk flushes) hits both measures alike. Neither side's
    timing includes making up its input: the registration's fields, like the row, are
    prepared before the clock starts.
    """
    signer = Signer("trainer@bench", Ed25519PrivateKey.generate())
    ours = plain = 0.0
    for n in range(count):
        fields = registration(n)
        start = time.perf_counter()
        record = ledger.register(signer=signer, **fields)
        ours += time.perf_counter() - start
        row = (record.seq, record.type, record.model_digest, record.to_json())
        start = time.perf_counter()
        insert(row)
        plain += time.perf_counter() - start
    return count / ours, count / plain


def sqlite_append_rates(tmp: Path, count: int) -> tuple[float, float]:
    """Appends/s to a SQLite ledger and plain INSERTs/s (same WAL mode and FULL sync)."""
    conn = sqlite3.connect(tmp / "plain.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE ledger (seq INTEGER PRIMARY KEY, type TEXT NOT NULL, "
        "subject TEXT, record TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX ledger_subject ON ledger (subject)")

    def insert(row: StoredRow) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO ledger VALUES (?, ?, ?, ?)", row)
        conn.execute("COMMIT")

    try:
        with open_ledger(tmp / "append.db") as ledger:
            return paired_appends(ledger, insert, count)
    finally:
        conn.close()


def bench_sqlite_appends(tmp: Path, count: int, rows: list[list[str]]) -> None:
    rate, plain = sqlite_append_rates(tmp, count)
    rows.append(
        [
            "append (SQLite, WAL, FULL sync)",
            f"{rate:,.0f} rec/s",
            f"{plain:,.0f} rec/s (plain INSERT)",
            f"{rate / plain:.2f}x",
            ">= 0.5x",
        ]
    )


def bench_postgres_appends(count: int, rows: list[list[str]]) -> None:
    with (
        postgres_server() as server,
        psycopg.connect(fresh_database(server, "bench_plain"), autocommit=True) as conn,
        open_ledger(fresh_database(server, "bench_ledger")) as ledger,
    ):
        conn.execute(
            "CREATE TABLE plain (seq BIGINT PRIMARY KEY, type TEXT NOT NULL, "
            "subject TEXT, record TEXT NOT NULL)"
        )
        conn.execute("CREATE INDEX plain_subject ON plain (subject)")

        def insert(row: StoredRow) -> None:
            conn.execute("INSERT INTO plain VALUES (%s, %s, %s, %s)", row)

        rate, plain = paired_appends(ledger, insert, count)
    rows.append(
        [
            "append (PostgreSQL 15, guarded statement)",
            f"{rate:,.0f} rec/s",
            f"{plain:,.0f} rec/s (plain INSERT)",
            f"{rate / plain:.2f}x",
            ">= 0.5x",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a short run")
    args = parser.parse_args()
    verify_count, hash_mib, append_count = (2000, 128, 300) if args.quick else (10_000, 1024, 1000)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="ztml-ledger-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with console.status("verify throughput"):
            bench_verify(tmp, verify_count, rows)
        with console.status("artifact hashing"):
            bench_hash(tmp, hash_mib, rows)
        with console.status("SQLite appends"):
            bench_sqlite_appends(tmp, append_count, rows)
        with console.status("PostgreSQL appends"):
            bench_postgres_appends(append_count, rows)
    table = Table(
        title=f"ledger benchmark ({'quick' if args.quick else 'full'}; "
        f"{os.cpu_count()} CPUs, shared machine)"
    )
    for column in ("measure", "ztml", "baseline (same run)", "ratio", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
