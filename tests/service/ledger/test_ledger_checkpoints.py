"""The ledger's Merkle tree: proofs the independent verifier accepts, rollback, witnesses.

`scripts/tlog-verify` imports nothing from ztml; it runs as a subprocess here, on proofs
made from a real 1,000-record ledger with a checkpoint signed at every append.
"""

from __future__ import annotations

import base64
import json
import random
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.chain.note import ED25519, Verifier
from service.chain.seen import SeenCheckpoints
from service.chain.tlog import TreeCheckpoint, witness_verifier
from service.keys.store import Signer, TrustStore
from service.ledger import Ledger, LedgerIntegrityError, open_ledger, verify_export
from service.ledger.checkpoints import Prover
from service.ledger.records import Record
from tests.service.ledger.conftest import Clock, digest_of, register_model

ROOT = Path(__file__).resolve().parents[3]
TLOG_VERIFY = ROOT / "scripts" / "tlog-verify"
RECORDS = 1000


@dataclass
class Grown:
    db: Path
    records: list[Record]
    checkpoints: dict[int, TreeCheckpoint]
    vkeys: list[str]


@pytest.fixture(scope="module")
def grown(
    tmp_path_factory: pytest.TempPathFactory, trainer: Signer, approver: Signer, trust: TrustStore
) -> Grown:
    db = tmp_path_factory.mktemp("grown") / "ledger.db"
    with open_ledger(db, clock=Clock()) as ledger:
        n = 0
        while ledger.count() < RECORDS:
            register_model(ledger, trainer, n)
            if n % 3 == 0:
                ledger.approve(digest_of(n), signer=approver, comment="ok")
            n += 1
        records = list(ledger.records())
        checkpoints = {cp.size: cp for cp in ledger.checkpoints()}
        origin = ledger.origin()
    assert origin is not None
    vkeys = [Verifier(origin, ED25519, key).vkey() for key in trust.keys.values()]
    return Grown(db, records, checkpoints, vkeys)


def sqlite_copy(source: Path, target: Path) -> None:
    """Copy a SQLite database through its backup API (the WAL included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def tlog_verify(proofs: list[dict[str, Any]], tmp: Path, vkeys: list[str], *extra: str) -> Any:
    path = tmp / "proofs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in proofs))
    args = [a for v in vkeys for a in ("--vkey", v)]
    return subprocess.run(
        [sys.executable, str(TLOG_VERIFY), "--quiet", *args, *extra, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_append_signed_a_checkpoint(grown: Grown) -> None:
    assert sorted(grown.checkpoints) == list(range(1, len(grown.records) + 1))


def test_inclusion_of_every_record_and_random_consistency_verify_independently(
    grown: Grown, tmp_path: Path
) -> None:
    rng = random.Random(11)
    prover = Prover(grown.records)
    sizes = sorted({*range(1, 41), *rng.sample(range(41, RECORDS), 20), RECORDS})
    proofs = [prover.inclusion(grown.checkpoints[n], seq) for n in sizes for seq in range(n)]
    for _ in range(500):
        old, new = sorted(rng.sample(range(1, RECORDS + 1), 2))
        side: TreeCheckpoint | int = grown.checkpoints[old] if rng.random() < 0.5 else old
        proofs.append(prover.consistency(side, grown.checkpoints[new]))
    result = tlog_verify(proofs, tmp_path, grown.vkeys)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"verified {len(proofs)} proof(s)" in result.stdout


def _flip(proof: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    flipped = json.loads(json.dumps(proof))
    field = rng.choice([f for f in ("proof", "leaf") if flipped.get(f)])
    if field == "proof":
        at = rng.randrange(len(flipped["proof"]))
        raw = bytearray(base64.b64decode(flipped["proof"][at]))
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        flipped["proof"][at] = base64.b64encode(bytes(raw)).decode()
    else:
        raw = bytearray(base64.b64decode(flipped["leaf"]))
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        flipped["leaf"] = base64.b64encode(bytes(raw)).decode()
    return flipped


def test_a_flipped_proof_byte_fails_the_independent_verifier(grown: Grown, tmp_path: Path) -> None:
    rng = random.Random(12)
    prover = Prover(grown.records)
    for trial in range(12):
        new = rng.randint(3, RECORDS)
        if trial % 2:
            proof = prover.inclusion(grown.checkpoints[new], rng.randrange(new))
        else:
            proof = prover.consistency(rng.randint(1, new - 2), grown.checkpoints[new])
        result = tlog_verify([_flip(proof, rng)], tmp_path, grown.vkeys)
        assert result.returncode == 1 and "FAIL" in result.stdout, result.stdout


def test_a_checkpoint_by_an_untrusted_key_fails_the_independent_verifier(
    grown: Grown, tmp_path: Path, stranger: Signer
) -> None:
    genuine = grown.checkpoints[10]
    forged = TreeCheckpoint.create(
        origin=genuine.origin, size=10, root=genuine.root, signer=stranger
    )
    proof = Prover(grown.records).inclusion(forged, 3)
    result = tlog_verify([proof], tmp_path, grown.vkeys)
    assert result.returncode == 1 and "no --vkey key signed" in result.stdout


def test_cosigned_checkpoint_is_required_by_the_witness_option(
    grown: Grown, tmp_path: Path, trust: TrustStore
) -> None:
    db = tmp_path / "copy.db"
    sqlite_copy(grown.db, db)
    witness = Signer("witness", Ed25519PrivateKey.generate())
    vkey = witness_verifier("w.example/1", witness.public_key)
    with open_ledger(db, create=False) as ledger:
        cosigned = ledger.cosign(
            name="w.example/1",
            signer=witness,
            trust=trust,
            seen=SeenCheckpoints(tmp_path / "witness.json"),
            timestamp=1_800_000_000,
        )
        report = ledger.verify(trust, witnesses=[vkey])
        proof = ledger.prove_inclusion(5)
    assert report.tree.checkpoint == cosigned and report.unproven == 0
    args = ("--witness", vkey.vkey())
    assert tlog_verify([proof], tmp_path, grown.vkeys, *args).returncode == 0
    uncosigned = Prover(grown.records).inclusion(grown.checkpoints[RECORDS - 1], 5)
    result = tlog_verify([uncosigned], tmp_path, grown.vkeys, *args)
    assert result.returncode == 1 and "not cosigned" in result.stdout


def test_rollback_to_an_older_consistent_state_is_detected(
    tmp_path: Path, ledger: Ledger, trainer: Signer, approver: Signer, trust: TrustStore
) -> None:
    seen = SeenCheckpoints(tmp_path / "seen.json")
    register_model(ledger, trainer, 0)
    snapshot = tmp_path / "old.db"
    sqlite_copy(Path(ledger.url), snapshot)
    ledger.revoke(digest_of(0), signer=approver, reason="leaked")
    ledger.verify(trust, seen=seen)
    sqlite_copy(snapshot, Path(ledger.url))  # the revocation and its checkpoint vanish
    with open_ledger(ledger.url, create=False) as rolled:
        rolled.verify(trust)  # consistent on its own
        with pytest.raises(LedgerIntegrityError, match="rolled back") as caught:
            rolled.verify(trust, seen=seen)
    assert caught.value.position == "seq 1"


def test_a_record_after_the_newest_checkpoint_is_named_unproven(
    ledger: Ledger, trainer: Signer, trust: TrustStore
) -> None:
    register_model(ledger, trainer, 0)
    register_model(ledger, trainer, 1)
    records = [r.to_dict() for r in ledger.records()]
    first = ledger.checkpoint_at(1).text
    report = verify_export({"records": records, "checkpoint": first}, trust)
    assert (report.tree.proven_seq, report.unproven) == (0, 1)


def test_time_going_back_beyond_the_skew_is_named(
    tmp_path: Path, trainer: Signer, trust: TrustStore
) -> None:
    clock = Clock()
    with open_ledger(tmp_path / "l.db", clock=clock) as ledger:
        register_model(ledger, trainer, 0)
        register_model(ledger, trainer, 1)
        records = [r.to_dict() for r in ledger.records()]
    from service.ledger.records import create_record

    back = create_record(
        seq=2,
        prev_hash=records[1]["hash"],
        record_type="evaluate",
        time="2026-11-22T09:54:00Z",
        model_digest=digest_of(0),
        payload={"evaluation": records[0]["payload"]["evaluation"]},
        signer=trainer,
    )[0]
    with pytest.raises(LedgerIntegrityError, match="goes back") as caught:
        verify_export([*records, back.to_dict()], trust)
    assert caught.value.position == "seq 2"
