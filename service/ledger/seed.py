"""Seed a pod's provenance ledger from the export the deploy gate approved.

Runs as the model pod's init container (``python -m service.ledger.seed``). The model
service verifies its ledger at start (``ZTML_LEDGER_URL``); in a cluster that ledger
starts empty, so this step copies in the signed records of the ledger export that
``pulumi up`` verified and mounted. It trusts nothing it reads: the export is verified
against the trust directory before a record is written, and the records go in through
:meth:`~service.ledger.ledger.Ledger.import_records`, which refuses a ledger that
diverges from the export and holds every record to the append rules. Records are stored
exactly as exported (signatures and hashes unchanged), with the export's signed
checkpoint, so the service checks the same evidence, proven as far, as the gate checked.

Before anything is written, the export passes the one deploy gate
(:func:`service.gate.check_deploy`) for the pod's model digest (``--model-digest``, or
the pod's ``ZTML_MODEL_DIGEST``) and its model (``--model-path``, or
``ZTML_MODEL_PATH``: the weights file, or a model package's directory, whose contract
names its weights, as the service reads it), whose OMS bundle must verify against the
trusted OMS signers (``--oms-signers``, or ``ZTML_OMS_SIGNERS_DIR``, or the trust directory's
``oms_signers/``): a pod never seeds a ledger that does not approve the model it is
about to serve, and the command refuses to run without a digest and a model file. Given
witness keys (``--witness``, or ``ZTML_LEDGER_WITNESS_KEYS``), the export's checkpoint
must be cosigned by every one of them.

With ``--audit-keys DIR`` it also creates the pod's audit signing key there when it is
missing (mode 0600 in a 0700 directory on the pod's volume) and prints its key id, so
the cluster's log holds the id of the key that signs the pod's audit checkpoints. The
private key is made in the pod and never leaves its volume.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.chain.errors import NoteError
from service.chain.note import Verifier
from service.chain.tlog import parse_witness_keys
from service.gate import GateError, GateTrust, check_deploy
from service.keys.errors import KeyError_
from service.keys.store import TrustStore
from service.ledger.errors import LedgerError, SeedError
from service.ledger.factory import open_ledger
from service.ledger.verify import verified_export


def seed_ledger(
    *,
    export_path: Path,
    ledger_url: str,
    trust_dir: Path,
    model_digest: str | None = None,
    model_path: Path | None = None,
    oms_signers: Path | None = None,
    witnesses: Sequence[Verifier] = (),
) -> int:
    """Append the export's records missing from the ledger at ``ledger_url``.

    Args:
        export_path: The ``ztml ledger export`` file.
        ledger_url: The ledger to seed (created when missing).
        trust_dir: Directory of trusted ``*.pub`` keys.
        model_digest: When given, the export must pass the deploy gate for this digest
            before anything is written.
        model_path: When given, the gate also checks this model and its OMS bundle
            (and pins it to ``model_digest``): its weights file, or a model package's
            directory (the weights its contract names, the bundle over the directory).
        oms_signers: The trusted OMS signer keys' directory (default: the gate's).
        witnesses: Witnesses that must all have cosigned the export's checkpoint (the
            gate's requirement; none by default).

    Returns:
        How many records were appended.

    Raises:
        SeedError: no trusted key, the export is unreadable or does not verify, the
            deploy gate refuses the model (every reason: its digest, its file, its OMS
            signature), or the ledger diverges from the export.
    """
    try:
        trust = TrustStore.from_directory(trust_dir)
    except KeyError_ as exc:
        raise SeedError(f"The trust directory {trust_dir} is unusable: {exc}") from exc
    if not trust.keys:
        raise SeedError(f"No trusted *.pub key in {trust_dir}; refusing to seed.")
    try:
        text = export_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SeedError(
            f"Cannot read the ledger export {export_path} ({exc.strerror or exc}); it is "
            "mounted from the export `pulumi up` approved."
        ) from exc
    try:
        records, report = verified_export(text, trust)
    except LedgerError as exc:
        raise SeedError(f"The ledger export does not verify: {exc}") from exc
    if model_digest is not None or model_path is not None:
        artifact = None if model_path is None else _weights(model_path)
        try:
            check_deploy(
                trust=GateTrust.from_directory(trust_dir, oms_signers=oms_signers),
                artifact=artifact,
                digest=model_digest,
                ledger_export=export_path,
                witnesses=witnesses,
            )
        except GateError as exc:
            raise SeedError(f"The deploy gate refuses to seed: {exc}") from exc
    try:
        with open_ledger(ledger_url, create=True) as ledger:
            checkpoint = report.tree.checkpoint
            appended = ledger.import_records(
                records, trust, checkpoint=None if checkpoint is None else checkpoint.text
            )
            ledger.verify(trust)
    except LedgerError as exc:
        raise SeedError(f"Seeding the ledger failed: {exc}") from exc
    return appended


def _weights(model_path: Path) -> Path:
    """The weights file of the pod's model (see :func:`service.model.contract.weights_path`).

    Raises:
        SeedError: the model package's contract cannot be read.
    """
    from service.model.contract import weights_path
    from service.model.errors import ModelError

    try:
        return weights_path(model_path)
    except ModelError as exc:
        raise SeedError(f"The deploy gate refuses to seed: {exc}") from exc


def make_private_home(home: Path) -> None:
    """Create ``home`` (mode 0700) or tighten it; it must belong to this user.

    Raises:
        SeedError: it cannot be made, or another user owns it.
    """
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = home.stat()
        if info.st_uid != os.geteuid():
            raise SeedError(
                f"{home} belongs to uid {info.st_uid}, not to this user ({os.geteuid()}); "
                "the service's home must be its own."
            )
        home.chmod(0o700)
    except OSError as exc:
        raise SeedError(f"Cannot make the service's home {home}: {exc.strerror or exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m service.ledger.seed --export F --ledger URL --trust-dir D``.

    The model digest comes from ``--model-digest`` or ``ZTML_MODEL_DIGEST``, the model
    file from ``--model-path`` or ``ZTML_MODEL_PATH``; both are required.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="make this directory (0700, this user's) first: the service's home",
    )
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--trust-dir", type=Path, required=True)
    parser.add_argument(
        "--model-digest",
        default=os.environ.get("ZTML_MODEL_DIGEST"),
        help="the digest the pod serves (default: $ZTML_MODEL_DIGEST); required",
    )
    parser.add_argument(
        "--audit-keys",
        type=Path,
        default=None,
        help="create the pod's audit signing key in this directory when missing",
    )
    parser.add_argument(
        "--model-path",
        type=Path,
        default=os.environ.get("ZTML_MODEL_PATH") or None,
        help="the model the pod serves: its weights file with model.sig beside it, or a "
        "model package's directory (default: $ZTML_MODEL_PATH); required",
    )
    parser.add_argument(
        "--oms-signers",
        type=Path,
        default=os.environ.get("ZTML_OMS_SIGNERS_DIR") or None,
        help="trusted OMS signer keys (default: $ZTML_OMS_SIGNERS_DIR or TRUST_DIR/oms_signers)",
    )
    parser.add_argument(
        "--witness",
        action="append",
        default=None,
        help="a witness vkey (cosignature/v1) that must have cosigned the export's "
        "checkpoint; repeatable (default: $ZTML_LEDGER_WITNESS_KEYS, separated by spaces)",
    )
    args = parser.parse_args(argv)
    vkeys = args.witness or (os.environ.get("ZTML_LEDGER_WITNESS_KEYS") or "").split()
    try:
        witnesses = parse_witness_keys(vkeys)
    except NoteError as exc:
        print(f"ledger seed failed: witness key: {exc}", file=sys.stderr)
        return 1
    if args.home is not None:
        try:
            make_private_home(args.home)
        except SeedError as exc:
            print(f"ledger seed failed: {exc}", file=sys.stderr)
            return 1
    if not args.model_digest:
        print(
            "ledger seed failed: no model digest to gate (pass --model-digest or set "
            "ZTML_MODEL_DIGEST)",
            file=sys.stderr,
        )
        return 1
    if args.model_path is None:
        print(
            "ledger seed failed: no model file to verify (pass --model-path or set "
            "ZTML_MODEL_PATH)",
            file=sys.stderr,
        )
        return 1
    try:
        count = seed_ledger(
            export_path=args.export,
            ledger_url=args.ledger,
            trust_dir=args.trust_dir,
            model_digest=args.model_digest,
            model_path=args.model_path,
            oms_signers=args.oms_signers,
            witnesses=witnesses,
        )
    except SeedError as exc:
        print(f"ledger seed failed: {exc}", file=sys.stderr)
        return 1
    print(f"ledger seeded: {count} record(s) appended")
    if args.audit_keys is not None:
        from service.keys.store import init_keys, key_id, load_public_key

        try:
            init_keys(args.audit_keys, ("audit",))
            audit_id = key_id(load_public_key(args.audit_keys / "audit.pub"))
        except KeyError_ as exc:
            print(f"audit key set-up failed: {exc}", file=sys.stderr)
            return 1
        print(f"audit signing key: {audit_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
