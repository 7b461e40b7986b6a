"""Seed a pod's provenance ledger from the export the deploy gate approved.

Runs as the model pod's init container (``python -m infra.ledger_seed``). The model
service verifies its ledger at start (``ZTML_LEDGER_URL``); in a cluster that ledger
starts empty, so this step copies in the signed records of the ledger export that
``pulumi up`` verified and mounted. It trusts nothing it reads: the export is verified
against the trust directory before a record is written, an existing ledger must be a
prefix of the export (same hashes) or the step fails, and the result is verified again.
Records are stored exactly as exported (signatures and hashes unchanged), so the
service checks the same evidence the gate checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.errors import LedgerExportError


def _records(text: str) -> list[dict[str, Any]]:
    data = json.loads(text)
    records = data.get("records") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise LedgerExportError("The ledger export is not a list of records.")
    return records


def seed_ledger(*, export_path: Path, ledger_url: str, trust_dir: Path) -> int:
    """Append the export's records missing from the ledger at ``ledger_url``.

    Args:
        export_path: The ``ztml ledger export`` file.
        ledger_url: The ledger to seed (created when missing).
        trust_dir: Directory of trusted ``*.pub`` keys.

    Returns:
        How many records were appended.

    Raises:
        LedgerExportError: the export does not verify, or diverges from the ledger.
    """
    from service.keys.store import TrustStore
    from service.ledger import LedgerError, open_ledger, verify_export_text
    from service.ledger.records import Record, record_from_dict
    from service.ledger.rules import subject_of
    from service.ledger.storage.base import AppendView, Row

    text = export_path.read_text(encoding="utf-8")
    trust = TrustStore.from_directory(trust_dir)
    if not trust.keys:
        raise LedgerExportError(f"No trusted *.pub key in {trust_dir}; refusing to seed.")
    try:
        verify_export_text(text, trust)
    except LedgerError as exc:
        raise LedgerExportError(f"The ledger export does not verify: {exc}") from exc
    wanted = [record_from_dict(r) for r in _records(text)]
    appended = 0
    try:
        with open_ledger(ledger_url, create=True) as ledger:
            existing = list(ledger.records())
            for old, new in zip(existing, wanted, strict=False):
                if old.hash != new.hash:
                    raise LedgerExportError(
                        f"The ledger at {ledger.url} diverges from the export at seq {old.seq}; "
                        "refusing to seed."
                    )
            for record in wanted[len(existing) :]:

                def build(view: AppendView, record: Record = record) -> Row:
                    head = view.head()
                    expected = 0 if head is None else head.seq + 1
                    if record.seq != expected:
                        raise LedgerExportError(
                            f"Cannot append seq {record.seq}: the ledger's next seq is "
                            f"{expected} (another writer?); retry."
                        )
                    subject = subject_of(record.type, record.model_digest, record.payload)
                    return Row(record.seq, record.type, subject, record.to_json())

                ledger.backend.append(build)
                appended += 1
            ledger.verify(trust)
    except LedgerError as exc:
        raise LedgerExportError(f"Seeding the ledger failed: {exc}") from exc
    return appended


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m infra.ledger_seed --export F --ledger URL --trust-dir D``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--trust-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        count = seed_ledger(
            export_path=args.export, ledger_url=args.ledger, trust_dir=args.trust_dir
        )
    except (LedgerExportError, OSError, ValueError) as exc:
        print(f"ledger seed failed: {exc}", file=sys.stderr)
        return 1
    print(f"ledger seeded: {count} record(s) appended")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
