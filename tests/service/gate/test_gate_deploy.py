"""The one deploy gate: approved models pass; everything else raises with every reason."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.gate import (
    GateEvidenceError,
    GateTrust,
    GateTrustError,
    GateUnavailableError,
    ModelDeniedError,
    Requirements,
    check_deploy,
)
from service.keys.store import TrustStore, public_pem
from tests.service.gate.conftest import Evidence
from tests.service.oms.tampering import ATTACKS, REFUSALS, attack


@pytest.fixture
def model_copy(evidence: Evidence, tmp_path: Path) -> Path:
    """A copy of the signed model directory, to attack; returns its artifact."""
    target = tmp_path / "model"
    shutil.copytree(evidence.artifact.parent, target)
    return target / evidence.artifact.name


def test_approved_artifact_passes_against_the_ledger(evidence: Evidence) -> None:
    approved = check_deploy(
        trust=evidence.trust, artifact=evidence.artifact, ledger_url=evidence.ledger_url
    )
    assert approved.digest == evidence.digest
    assert (approved.name, approved.version) == ("digits-mlp", "3")
    assert approved.size == evidence.artifact.stat().st_size
    assert approved.export_text is None
    assert approved.oms_bundle is not None and approved.oms_bundle.startswith("sha256:")


@pytest.mark.parametrize("name", ATTACKS)
def test_each_oms_attack_on_the_artifact_is_denied(
    name: str, evidence: Evidence, model_copy: Path, tmp_path: Path
) -> None:
    attack(name, model_copy.parent, scratch=tmp_path)
    with pytest.raises(ModelDeniedError) as denied:
        check_deploy(trust=evidence.trust, artifact=model_copy, ledger_url=evidence.ledger_url)
    assert any("OMS signature refused" in r and REFUSALS[name] in r for r in denied.value.reasons)


def test_tampered_weights_are_denied_with_every_reason(
    evidence: Evidence, model_copy: Path, tmp_path: Path
) -> None:
    attack("weights", model_copy.parent, scratch=tmp_path)
    with pytest.raises(ModelDeniedError) as denied:
        check_deploy(trust=evidence.trust, artifact=model_copy, ledger_url=evidence.ledger_url)
    assert any("no register record" in r for r in denied.value.reasons)
    assert any("OMS signature refused" in r for r in denied.value.reasons)


def test_tampered_weights_pinned_to_the_approved_digest_are_denied(
    evidence: Evidence, model_copy: Path, tmp_path: Path
) -> None:
    attack("weights", model_copy.parent, scratch=tmp_path)
    with pytest.raises(ModelDeniedError) as denied:
        check_deploy(
            trust=evidence.trust,
            artifact=model_copy,
            digest=evidence.digest,
            ledger_export=evidence.export,
        )
    assert any("pinned" in r for r in denied.value.reasons)
    assert any("OMS signature refused" in r for r in denied.value.reasons)


def test_an_artifact_is_refused_when_no_oms_signer_is_trusted(evidence: Evidence) -> None:
    trust = replace(evidence.trust, oms_signers=None)
    with pytest.raises(GateTrustError, match="oms_signers"):
        check_deploy(trust=trust, artifact=evidence.artifact, ledger_url=evidence.ledger_url)


def test_trust_directory_without_oms_signers_is_refused(evidence: Evidence, tmp_path: Path) -> None:
    (tmp_path / "trainer.pub").write_text(public_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(GateTrustError, match="No trusted OMS signer keys"):
        GateTrust.from_directory(tmp_path)


def test_approved_digest_passes_against_the_export(evidence: Evidence) -> None:
    approved = check_deploy(
        trust=evidence.trust, digest=evidence.digest, ledger_export=evidence.export
    )
    assert approved.export_text == evidence.export.read_text()
    assert [r["type"] for r in approved.records] == ["register", "approve"]


def test_stricter_requirements_deny_with_the_policy_reason(evidence: Evidence) -> None:
    strict = Requirements(
        min_robust_accuracy=0.95, epsilon=0.1, attack="worst-case", min_steps=100, min_restarts=10
    )
    with pytest.raises(ModelDeniedError) as info:
        check_deploy(
            trust=evidence.trust,
            digest=evidence.digest,
            ledger_url=evidence.ledger_url,
            requirements=strict,
        )
    assert any("robust accuracy >= 0.95" in r for r in info.value.reasons), info.value.reasons


def test_every_policy_reason_is_carried(evidence: Evidence) -> None:
    unknown = "sha256:" + "e" * 64
    with pytest.raises(ModelDeniedError) as info:
        check_deploy(trust=evidence.trust, digest=unknown, ledger_url=evidence.ledger_url)
    assert any("no register record" in r for r in info.value.reasons)
    assert any("no approve record" in r for r in info.value.reasons)
    for reason in info.value.reasons:
        assert reason in str(info.value)


def test_artifact_not_matching_the_pinned_digest_is_denied(evidence: Evidence) -> None:
    with pytest.raises(ModelDeniedError, match="pinned"):
        check_deploy(
            trust=evidence.trust,
            artifact=evidence.artifact,
            digest="sha256:" + "0" * 64,
            ledger_url=evidence.ledger_url,
        )


def test_tampered_export_raises_never_returns_unverified(
    evidence: Evidence, tmp_path: Path
) -> None:
    data = json.loads(evidence.export.read_text())
    data["records"][0]["payload"]["version"] = "forged"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    with pytest.raises(ModelDeniedError) as info:
        check_deploy(trust=evidence.trust, digest=evidence.digest, ledger_export=forged)
    assert "not verified" in str(info.value) and "hash mismatch" in str(info.value)


def test_ledger_signed_by_untrusted_keys_is_denied(evidence: Evidence) -> None:
    stranger = TrustStore.from_public_keys([Ed25519PrivateKey.generate().public_key()])
    trust = GateTrust(stranger, evidence.trust.trainer_key_ids, evidence.trust.approver_key_ids)
    with pytest.raises(ModelDeniedError, match="cannot be verified"):
        check_deploy(trust=trust, digest=evidence.digest, ledger_url=evidence.ledger_url)


def test_missing_export_names_the_fix(evidence: Evidence, tmp_path: Path) -> None:
    with pytest.raises(GateEvidenceError, match="ztml ledger export"):
        check_deploy(
            trust=evidence.trust, digest=evidence.digest, ledger_export=tmp_path / "absent.json"
        )


def test_missing_ledger_is_an_evidence_error(evidence: Evidence, tmp_path: Path) -> None:
    with pytest.raises(GateEvidenceError):
        check_deploy(
            trust=evidence.trust, digest=evidence.digest, ledger_url=str(tmp_path / "none.db")
        )


def test_gate_fails_closed_without_opa(evidence: Evidence) -> None:
    with pytest.raises(GateUnavailableError):
        check_deploy(
            trust=evidence.trust,
            digest=evidence.digest,
            ledger_url=evidence.ledger_url,
            opa=Path("/nonexistent/opa"),
        )


def test_no_trusted_key_is_refused(evidence: Evidence) -> None:
    with pytest.raises(GateTrustError):
        check_deploy(
            trust=GateTrust(TrustStore(), (), ()),
            digest=evidence.digest,
            ledger_url=evidence.ledger_url,
        )


def test_empty_trust_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GateTrustError, match="ztml keys init"):
        GateTrust.from_directory(tmp_path)


def test_one_ledger_source_is_required(evidence: Evidence) -> None:
    with pytest.raises(ValueError, match="not both"):
        check_deploy(
            trust=evidence.trust,
            digest=evidence.digest,
            ledger_url=evidence.ledger_url,
            ledger_export=evidence.export,
        )
