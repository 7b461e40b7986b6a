"""Regenerate the previous-format ledger and audit log used by the migration tests.

They must be written by the version before Merkle checkpoints (commit c001f7c), so this
script runs against a copy of that tree, never against the current one::

    git archive c001f7c service policies | tar -x -C /tmp/ztml-c001f7c
    PYTHONPATH=/tmp/ztml-c001f7c .venv/bin/python \\
        tests/service/ledger/testdata/make_previous_format.py --regenerate

It writes ``tests/service/ledger/testdata/previous/`` (``ledger.db``, ``trust/*.pub``)
and ``tests/service/audit/testdata/previous/`` (``audit/``, ``audit-anchors.jsonl``,
``trust/audit.pub``). Private keys are generated in a temporary directory and thrown
away; only public keys are kept.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
AUDIT_OUT = HERE.parents[1] / "audit" / "testdata" / "previous"
LEDGER_OUT = HERE / "previous"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regenerate", action="store_true", required=True)
    parser.parse_args()
    import service.chain.core as core

    if hasattr(core, "MAX_CLOCK_SKEW_S"):
        print("run this against the previous version's tree (see the docstring)")
        return 1
    from service.audit import AuditLog, FileAnchorSink, LedgerAnchorSink
    from service.keys.store import Signer, init_keys
    from service.ledger import open_ledger

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        keys = {k.name: k for k in init_keys(tmp / "keys", ["trainer", "approver", "audit"])}
        trainer = Signer.from_file(keys["trainer"].private_path, "trainer@old-host")
        approver = Signer.from_file(keys["approver"].private_path, "approver@old-host")
        audit = Signer.from_file(keys["audit"].private_path, "audit")
        start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        ticks = iter(range(10_000))
        evaluation = {
            "dataset": "sklearn-digits/test",
            "clean_accuracy": 0.97,
            "robust": [
                {
                    "attack": "pgd",
                    "norm": "linf",
                    "epsilon": 0.1,
                    "steps": 20,
                    "restarts": 1,
                    "accuracy": 0.8,
                }
            ],
        }
        with open_ledger(
            tmp / "ledger.db", clock=lambda: start + timedelta(seconds=next(ticks))
        ) as ledger:
            for n in range(12):
                digest = f"sha256:{n + 1:064x}"
                ledger.register(
                    signer=trainer,
                    name="digits-mlp",
                    version=f"0.{n}",
                    artifact={"digest": digest, "format": "safetensors", "size": 70_000 + n},
                    training_data_digest="sha256:" + "d" * 64,
                    code_revision="4f1c2ab",
                    hyperparameters={"lr": 0.001, "epochs": 30},
                    evaluation=evaluation,
                )
                if n % 2 == 0:
                    ledger.evaluate(digest, evaluation, signer=trainer)
                if n % 3 != 2:
                    ledger.approve(digest, signer=approver, comment=f"reviewed {n}")
                if n % 5 == 4:
                    ledger.revoke(digest, signer=approver, reason="superseded")
            audit_dir = tmp / "audit"
            file_sink = FileAnchorSink(tmp / "audit-anchors.jsonl")
            for log_number in range(2):
                sink = file_sink if log_number == 0 else LedgerAnchorSink(ledger, audit)
                with AuditLog(audit_dir, audit, anchor_sink=sink, checkpoint_every=7) as log:
                    for n in range(30):
                        log.append(
                            {
                                "time": f"2026-01-05T10:{log_number:02d}:{n:02d}.000Z",
                                "kind": "request",
                                "request_id": f"r-{log_number}-{n}",
                                "subject": "alice",
                                "tenant": "acme",
                                "action": "predict",
                                "decision": {"allow": True, "reasons": [], "decision_id": f"d{n}"},
                                "status": 200,
                                "latency_ms": 1.5,
                                "client": "127.0.0.1",
                                "model_digest": "sha256:" + "1" * 64,
                            }
                        )
        with sqlite3.connect(tmp / "ledger.db") as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        for out in (LEDGER_OUT, AUDIT_OUT):
            shutil.rmtree(out, ignore_errors=True)
            (out / "trust").mkdir(parents=True)
        shutil.copyfile(tmp / "ledger.db", LEDGER_OUT / "ledger.db")
        for name in ("trainer", "approver", "audit"):
            shutil.copyfile(keys[name].public_path, LEDGER_OUT / "trust" / f"{name}.pub")
        shutil.copyfile(keys["audit"].public_path, AUDIT_OUT / "trust" / "audit.pub")
        shutil.copytree(audit_dir, AUDIT_OUT / "audit")
        shutil.copyfile(tmp / "audit-anchors.jsonl", AUDIT_OUT / "audit-anchors.jsonl")
    print(f"wrote {LEDGER_OUT} and {AUDIT_OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
