"""The deploy gate with witness keys: only a checkpoint every witness cosigned is relied upon."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.chain.note import Verifier
from service.chain.seen import SeenCheckpoints
from service.chain.tlog import TreeCheckpoint, witness_verifier
from service.gate import ModelDeniedError, check_deploy
from service.keys.store import Signer
from service.ledger import Ledger, open_ledger
from service.ledger.storage import CheckpointRow
from tests.service.gate.conftest import Evidence

WITNESS = "w.example/1"
TIME = 1_800_000_000


@pytest.fixture
def witness() -> Signer:
    return Signer(WITNESS, Ed25519PrivateKey.generate())


@pytest.fixture
def vkey(witness: Signer) -> Verifier:
    return witness_verifier(WITNESS, witness.public_key)


@pytest.fixture
def ledger_url(evidence: Evidence, tmp_path: Path) -> str:
    """A copy of the evidence ledger (register, approve; no cosignature), to change."""
    copy = tmp_path / "ledger.db"
    shutil.copyfile(evidence.ledger_url, copy)
    return str(copy)


def cosign(url: str, evidence: Evidence, witness: Signer, state: Path) -> TreeCheckpoint:
    """Have ``witness`` verify and cosign the ledger's newest checkpoint."""
    with open_ledger(url, create=False) as ledger:
        return ledger.cosign(
            name=witness.identity,
            signer=witness,
            trust=evidence.trust.store,
            seen=SeenCheckpoints(state),
            timestamp=TIME,
        )


def export(url: str, evidence: Evidence, path: Path, checkpoint: str | None = None) -> Path:
    """Write the ledger's export, its checkpoint replaced by ``checkpoint`` when given."""
    with open_ledger(url, create=False) as ledger:
        document = ledger.export(evidence.trust.store)
    if checkpoint is not None:
        document["checkpoint"] = checkpoint
    path.write_text(json.dumps(document))
    return path


def gate(evidence: Evidence, witnesses: list[Verifier], **source: str | Path) -> None:
    check_deploy(trust=evidence.trust, digest=evidence.digest, witnesses=witnesses, **source)


def test_ledger_without_a_cosignature_is_refused_naming_the_witness(
    evidence: Evidence, ledger_url: str, vkey: Verifier
) -> None:
    with pytest.raises(ModelDeniedError, match=f"cosigned by the witness\\(es\\) {WITNESS}"):
        gate(evidence, [vkey], ledger_url=ledger_url)


def test_export_without_a_cosignature_is_refused_naming_the_witness(
    evidence: Evidence, vkey: Verifier
) -> None:
    with pytest.raises(ModelDeniedError, match=f"not cosigned by the witness\\(es\\) {WITNESS}"):
        gate(evidence, [vkey], ledger_export=evidence.export)


def test_cosignature_by_an_untrusted_key_is_refused(
    evidence: Evidence, ledger_url: str, vkey: Verifier, tmp_path: Path
) -> None:
    impostor = Signer(WITNESS, Ed25519PrivateKey.generate())
    cosign(ledger_url, evidence, impostor, tmp_path / "impostor.json")
    for source in (
        {"ledger_url": ledger_url},
        {"ledger_export": export(ledger_url, evidence, tmp_path / "export.json")},
    ):
        with pytest.raises(ModelDeniedError, match=f"witness\\(es\\) {WITNESS}"):
            gate(evidence, [vkey], **source)


def test_cosignature_over_a_different_root_is_refused(
    evidence: Evidence, ledger_url: str, witness: Signer, vkey: Verifier, tmp_path: Path
) -> None:
    with open_ledger(ledger_url, create=False) as ledger:
        first, newest = ledger.checkpoint_at(1), ledger.checkpoint_at(2)
    foreign = first.cosigned(name=WITNESS, signer=witness, timestamp=TIME).note.signatures[-1]
    grafted = TreeCheckpoint(
        newest.origin, newest.size, newest.root, newest.note.with_signature(foreign)
    )
    path = export(ledger_url, evidence, tmp_path / "grafted.json", grafted.text)
    with open_ledger(ledger_url, create=False) as ledger:
        ledger.backend.put_checkpoint(CheckpointRow(2, grafted.text, _frontier(ledger, 2)))
    for source in ({"ledger_export": path}, {"ledger_url": ledger_url}):
        with pytest.raises(ModelDeniedError, match=f"signature by {WITNESS} .* does not verify"):
            gate(evidence, [vkey], **source)


def _frontier(ledger: Ledger, size: int) -> str:
    return next(r.frontier for r in ledger.backend.checkpoints() if r.size == size)


def test_valid_cosignature_is_allowed(
    evidence: Evidence, ledger_url: str, witness: Signer, vkey: Verifier, tmp_path: Path
) -> None:
    cosign(ledger_url, evidence, witness, tmp_path / "witness.json")
    gate(evidence, [vkey], ledger_url=ledger_url)
    gate(evidence, [vkey], ledger_export=export(ledger_url, evidence, tmp_path / "export.json"))


def test_every_witness_must_cosign(
    evidence: Evidence, ledger_url: str, witness: Signer, vkey: Verifier, tmp_path: Path
) -> None:
    second = Signer("w.example/2", Ed25519PrivateKey.generate())
    cosign(ledger_url, evidence, witness, tmp_path / "witness.json")
    both = [vkey, witness_verifier(second.identity, second.public_key)]
    with pytest.raises(ModelDeniedError, match=r"witness\(es\) w\.example/2"):
        gate(evidence, both, ledger_url=ledger_url)
    cosign(ledger_url, evidence, second, tmp_path / "second.json")
    gate(evidence, both, ledger_url=ledger_url)


def test_later_records_leave_the_cosigned_checkpoint_relied_upon(
    evidence: Evidence, ledger_url: str, witness: Signer, vkey: Verifier, tmp_path: Path
) -> None:
    cosign(ledger_url, evidence, witness, tmp_path / "witness.json")
    with open_ledger(ledger_url, create=False) as ledger:
        ledger.revoke(evidence.digest, signer=evidence.approver, reason="leaked weights")
    with pytest.raises(ModelDeniedError, match=r"unproven.*newest cosigned by the witness"):
        gate(evidence, [vkey], ledger_url=ledger_url)
