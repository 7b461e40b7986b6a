"""The deploy gate: only a registered, evaluated, approved, unrevoked digest deploys.

The ledger export is made by the real ledger (service.ledger, signed records) in
conftest.py; the hand-built export in testdata/ has no valid signatures and is used to
show that the Python verification, not the file, decides ``verified``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.config import StackConfig, Thresholds, TrustKey
from infra.errors import (
    ConfigError,
    DeployDeniedError,
    LedgerExportError,
    PolicyEvaluationError,
)
from infra.gate import (
    LedgerEvidence,
    check_deploy,
    enforce_deploy_gate,
    read_ledger_export,
    verify_ledger_export,
)

TESTDATA = Path(__file__).parent / "testdata"
HANDMADE = TESTDATA / "handmade-ledger-export.json"
THRESHOLDS = Thresholds(min_robust_accuracy=0.8, epsilon=0.1, attack="pgd", min_steps=20)


@pytest.fixture
def denied(
    program_runner: Callable[[StackConfig], Any], registered_urns: Callable[[], list[str]]
) -> Callable[[StackConfig], list[str]]:
    """Run the program, expect the gate to stop it, return the reasons."""

    def run(config: StackConfig) -> list[str]:
        with pytest.raises(DeployDeniedError) as info:
            program_runner(config)
        assert not [u for u in registered_urns() if "kubernetes:" in u], "declared while denied"
        return info.value.reasons

    return run


def test_approved_digest_passes_the_gate(make_config: Callable[..., StackConfig]) -> None:
    result = enforce_deploy_gate(make_config())
    assert result.decision["allow"] is True
    assert result.evidence.verified is True


def test_unregistered_digest_fails_the_program_with_reasons(
    make_config: Callable[..., StackConfig], denied: Any, digests: Any
) -> None:
    reasons = denied(make_config(modelDigest=digests.unregistered))
    assert any(f"no register record for {digests.unregistered}" in r for r in reasons), reasons


def test_unapproved_digest_fails_the_program(
    make_config: Callable[..., StackConfig], denied: Any, digests: Any
) -> None:
    reasons = denied(make_config(modelDigest=digests.unapproved))
    assert any("no approve record" in r for r in reasons), reasons


def test_revoked_digest_fails_the_program(
    make_config: Callable[..., StackConfig], denied: Any, digests: Any
) -> None:
    reasons = denied(make_config(modelDigest=digests.revoked))
    assert any("revoked" in r and "training data leak" in r for r in reasons), reasons


def test_weak_model_fails_the_robustness_threshold(
    make_config: Callable[..., StackConfig], denied: Any, digests: Any
) -> None:
    reasons = denied(make_config(modelDigest=digests.weak))
    assert any("robust" in r for r in reasons), reasons


def test_approval_by_an_untrusted_approver_is_refused(
    make_config: Callable[..., StackConfig], denied: Any, ledger: Any
) -> None:
    reasons = denied(make_config(approverKeyIds=[ledger.trainer_key_id]))
    assert any("approve" in r for r in reasons), reasons


def test_denial_message_lists_every_reason(
    make_config: Callable[..., StackConfig], digests: Any
) -> None:
    with pytest.raises(DeployDeniedError) as info:
        enforce_deploy_gate(make_config(modelDigest=digests.unregistered))
    for reason in info.value.reasons:
        assert reason in str(info.value)
    assert digests.unregistered in str(info.value)


def test_tampered_export_is_unverified_and_denied(
    make_config: Callable[..., StackConfig], ledger: Any, digests: Any, tmp_path: Path
) -> None:
    export = json.loads(ledger.export_path.read_text())
    records = export["records"] if isinstance(export, dict) else export
    register = next(r for r in records if r["model_digest"] == digests.approved)
    register["payload"]["evaluation"]["robust"][0]["accuracy"] = 0.99
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(export))
    config = make_config(ledgerExport=str(tampered))
    evidence = verify_ledger_export(config.ledger_export, config.trust_keys)
    assert evidence.verified is False
    with pytest.raises(DeployDeniedError) as info:
        enforce_deploy_gate(config)
    assert any("not verified" in r for r in info.value.reasons), info.value.reasons
    assert any("verification failed" in r for r in info.value.reasons), info.value.reasons


def test_export_signed_by_unknown_keys_is_unverified(
    make_config: Callable[..., StackConfig], ledger: Any
) -> None:
    config = make_config()
    only_trainer = [k for k in config.trust_keys if k.key_id == ledger.trainer_key_id]
    evidence = verify_ledger_export(config.ledger_export, only_trainer)
    assert evidence.verified is False
    assert evidence.problem is not None


def test_handmade_export_without_real_signatures_is_unverified(
    make_config: Callable[..., StackConfig],
) -> None:
    config = make_config()
    evidence = verify_ledger_export(HANDMADE, config.trust_keys)
    assert evidence.verified is False
    assert "verification failed" in (evidence.problem or "")


def test_policy_allows_handmade_records_only_when_marked_verified() -> None:
    text, records = read_ledger_export(HANDMADE)
    digest = records[0]["model_digest"]
    trust = {"trainer_key_ids": ["ed25519:00000000000000aa"], "approver_key_ids": []}
    trust["approver_key_ids"] = ["ed25519:00000000000000bb"]
    verified = LedgerEvidence(text, records, True)
    result = check_deploy(
        digest=digest,
        evidence=verified,
        trainer_key_ids=trust["trainer_key_ids"],
        approver_key_ids=trust["approver_key_ids"],
        thresholds=THRESHOLDS,
    )
    assert result.decision["allow"] is True
    with pytest.raises(DeployDeniedError) as info:
        check_deploy(
            digest=digest,
            evidence=LedgerEvidence(text, records, False, "not checked"),
            trainer_key_ids=trust["trainer_key_ids"],
            approver_key_ids=trust["approver_key_ids"],
            thresholds=THRESHOLDS,
        )
    assert any("not verified" in r for r in info.value.reasons)


def test_missing_export_fails_with_a_fix(make_config: Callable[..., StackConfig]) -> None:
    config = make_config(ledgerExport="/nonexistent/ledger-export.json")
    with pytest.raises(LedgerExportError, match="ztml ledger export"):
        enforce_deploy_gate(config)


def test_export_that_is_not_a_record_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"records": "nope"}))
    with pytest.raises(LedgerExportError, match="not a list of records"):
        read_ledger_export(path)


def test_gate_fails_closed_without_opa(make_config: Callable[..., StackConfig]) -> None:
    with pytest.raises(PolicyEvaluationError):
        enforce_deploy_gate(make_config(), opa=Path("/nonexistent/opa"))


def test_trust_key_with_a_wrong_key_id_is_a_config_error(
    make_config: Callable[..., StackConfig], ledger: Any
) -> None:
    config = make_config()
    wrong = [TrustKey("ed25519:" + "0" * 16, config.trust_keys[0].public_key_pem)]
    with pytest.raises(ConfigError, match="does not match"):
        verify_ledger_export(config.ledger_export, wrong)
