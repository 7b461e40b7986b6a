"""The deploy gate: only a registered, evaluated, approved, unrevoked digest deploys.

The ledger export is made by the real ledger (service.ledger, signed records) in
conftest.py; the hand-built export in testdata/ has no valid signatures and is used to
show that the Python verification, not the file, decides ``verified``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra.config import StackConfig, TrustKey
from infra.errors import (
    ConfigError,
    DeployDeniedError,
    LedgerExportError,
    PolicyEvaluationError,
)
from infra.gate import enforce_deploy_gate
from service.authz.provenance import evaluate_provenance
from service.gate import load_requirements

TESTDATA = Path(__file__).parent / "testdata"
HANDMADE = TESTDATA / "handmade-ledger-export.json"


@pytest.fixture
def denied(
    program_runner: Callable[[StackConfig], Any], registered_urns: Callable[[], list[str]]
) -> Callable[[StackConfig], list[str]]:
    """Run the program, expect the gate to stop it, return the reasons."""

    def run(config: StackConfig) -> list[str]:
        # The program ends on the engine's error path (no traceback) with the gate's text.
        with pytest.raises(pulumi.RunError) as info:
            program_runner(config)
        assert not [u for u in registered_urns() if "kubernetes:" in u], "declared while denied"
        cause = info.value.__cause__
        assert isinstance(cause, DeployDeniedError), repr(cause)
        assert str(info.value) == str(cause)
        return cause.reasons

    return run


def test_approved_digest_passes_the_gate(make_config: Callable[..., StackConfig]) -> None:
    config = make_config()
    result = enforce_deploy_gate(config)
    assert result.digest == config.model_digest
    assert {r["type"] for r in result.model.records} >= {"register", "approve"}
    assert result.export_text == config.ledger_export.read_text()


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
    with pytest.raises(DeployDeniedError) as info:
        enforce_deploy_gate(config)
    assert any("not verified" in r for r in info.value.reasons), info.value.reasons
    assert any("verification failed" in r for r in info.value.reasons), info.value.reasons


def test_export_signed_by_unknown_keys_is_unverified(
    make_config: Callable[..., StackConfig], ledger: Any
) -> None:
    config = make_config()
    only_trainer = tuple(k for k in config.trust_keys if k.key_id == ledger.trainer_key_id)
    with pytest.raises(DeployDeniedError) as info:
        enforce_deploy_gate(dataclasses.replace(config, trust_keys=only_trainer))
    assert any("not verified" in r and "unknown key" in r for r in info.value.reasons)


def test_handmade_export_without_real_signatures_is_unverified(
    make_config: Callable[..., StackConfig],
) -> None:
    with pytest.raises(DeployDeniedError) as info:
        enforce_deploy_gate(make_config(ledgerExport=str(HANDMADE)))
    assert any("verification failed" in r for r in info.value.reasons), info.value.reasons


def test_policy_allows_handmade_records_only_when_marked_verified() -> None:
    data = json.loads(HANDMADE.read_text())
    records = data["records"] if isinstance(data, dict) else data
    digest = records[0]["model_digest"]
    trust = {"trainer_key_ids": ["ed25519:00000000000000aa"], "approver_key_ids": []}
    trust["approver_key_ids"] = ["ed25519:00000000000000bb"]

    def policy_input(verified: bool) -> dict[str, Any]:
        return {
            "digest": digest,
            "ledger": {"verified": verified, "records": records},
            "trust": trust,
            "requirements": load_requirements().to_input(),
        }

    assert evaluate_provenance(policy_input(True)).allow is True
    denied = evaluate_provenance(policy_input(False))
    assert denied.allow is False
    assert any("not verified" in r for r in denied.reasons)


def test_missing_export_fails_with_a_fix(make_config: Callable[..., StackConfig]) -> None:
    config = make_config(ledgerExport="/nonexistent/ledger-export.json")
    with pytest.raises(LedgerExportError, match="ztml ledger export"):
        enforce_deploy_gate(config)


def test_export_that_is_not_a_record_list_is_refused(
    make_config: Callable[..., StackConfig], tmp_path: Path
) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"records": "nope"}))
    with pytest.raises(LedgerExportError, match="not a list of records"):
        enforce_deploy_gate(make_config(ledgerExport=str(path)))


def test_gate_fails_closed_without_opa(make_config: Callable[..., StackConfig]) -> None:
    with pytest.raises(PolicyEvaluationError):
        enforce_deploy_gate(make_config(), opa=Path("/nonexistent/opa"))


def test_trust_key_with_a_wrong_key_id_is_a_config_error(
    make_config: Callable[..., StackConfig], ledger: Any
) -> None:
    config = make_config()
    wrong = (TrustKey("ed25519:" + "0" * 16, config.trust_keys[0].public_key_pem),)
    with pytest.raises(ConfigError, match="does not match"):
        enforce_deploy_gate(dataclasses.replace(config, trust_keys=wrong))


def test_a_configured_witness_that_did_not_cosign_is_named(
    make_config: Callable[..., StackConfig], ledger: Any
) -> None:
    config = make_config(ledgerWitnessKeys=[ledger.witness_vkey])
    with pytest.raises(DeployDeniedError) as info:
        enforce_deploy_gate(config)
    assert any("not cosigned by the witness(es) w.example/1" in r for r in info.value.reasons)


def test_an_export_the_configured_witness_cosigned_passes(
    make_config: Callable[..., StackConfig], ledger: Any
) -> None:
    config = make_config(
        ledgerWitnessKeys=[ledger.witness_vkey], ledgerExport=str(ledger.cosigned_export_path)
    )
    assert enforce_deploy_gate(config).digest == config.model_digest
