"""The deploy gate: the model Deployment is declared only for an approved digest.

Before the program declares the model service it reads the ledger export named by
``ztml:ledgerExport`` (written by ``ztml ledger export``), verifies every record's hash
chain and signature against the configured ledger trust keys, and asks the provenance
policy (``data.ztml.provenance.decision``, evaluated by the real ``opa`` binary) whether
the configured digest may be deployed. A denial raises :class:`DeployDeniedError` with
every reason the policy gave, so ``pulumi preview`` and ``pulumi up`` fail before any
resource is touched. Anything that cannot be checked (no OPA, no verifier, an unreadable
export) fails closed.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.config import StackConfig, Thresholds, TrustKey
from infra.errors import ConfigError, DeployDeniedError, LedgerExportError, PolicyEvaluationError
from infra.policypack.opa_eval import OpaEvalError, opa_eval, stage_policies

PROVENANCE_QUERY = "data.ztml.provenance.decision"
PROVENANCE_PARTS = ("provenance", "data", "lib")
POLICIES_DIR = Path(__file__).resolve().parents[1] / "policies"


@dataclass(frozen=True)
class LedgerEvidence:
    """A ledger export and the outcome of verifying it.

    Attributes:
        text: The export's JSON text, as read.
        records: The exported records.
        verified: True only when every record's chain link and signature verified.
        problem: Why verification failed, or None.
    """

    text: str
    records: list[dict[str, Any]]
    verified: bool
    problem: str | None = None


@dataclass(frozen=True)
class GateResult:
    """An allowed deployment: the decision and the evidence it rests on."""

    digest: str
    decision: dict[str, Any]
    evidence: LedgerEvidence


def read_ledger_export(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """Read a ``ztml ledger export`` file: a list of records (or ``{"records": [...]}``).

    Raises:
        LedgerExportError: the file is missing or is not a list of record objects.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LedgerExportError(
            f"Cannot read the ledger export {path} ({exc.strerror or exc}); write it with "
            "`ztml ledger export --out <file>` and set `ztml:ledgerExport` to its path."
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LedgerExportError(f"Ledger export {path} is not JSON: {exc}.") from exc
    records = data.get("records") if isinstance(data, dict) else data
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise LedgerExportError(
            f"Ledger export {path} is not a list of records (nor an object with 'records')."
        )
    return text, records


def _trust_store(keys: Sequence[TrustKey]) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from service.keys.store import TrustStore, key_id

    store = TrustStore()
    for index, item in enumerate(keys):
        try:
            public = load_pem_public_key(item.public_key_pem.encode())
        except ValueError as exc:
            raise ConfigError(
                f"Invalid config ztml:ledgerTrustKeys[{index}].publicKey: not a PEM public key "
                f"({exc})."
            ) from exc
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigError(
                f"Invalid config ztml:ledgerTrustKeys[{index}].publicKey: accepted values: an "
                "Ed25519 public key."
            )
        actual = key_id(public)
        if actual != item.key_id:
            raise ConfigError(
                f"Invalid config ztml:ledgerTrustKeys[{index}]: keyId {item.key_id} does not "
                f"match its public key ({actual})."
            )
        store.add(public)
    return store


def verify_ledger_export(path: Path, trust_keys: Sequence[TrustKey]) -> LedgerEvidence:
    """Read and verify a ledger export with the ledger's own verifier.

    Fails closed: without trust keys, without the verifier, or on any integrity error,
    the evidence is returned with ``verified=False`` and the problem stated.

    Raises:
        LedgerExportError: the file cannot be read or is not a list of records.
        ConfigError: a trust key is malformed or its key id does not match.
    """
    text, records = read_ledger_export(path)
    if not trust_keys:
        return LedgerEvidence(text, records, False, "no ledger trust keys configured")
    store = _trust_store(trust_keys)
    try:
        from service.ledger.errors import LedgerError
        from service.ledger.verify import verify_export_text
    except ImportError as exc:  # pragma: no cover - the ledger package ships with ztml
        return LedgerEvidence(text, records, False, f"ledger verifier unavailable: {exc}")
    try:
        verify_export_text(text, store)
    except LedgerError as exc:
        return LedgerEvidence(text, records, False, f"ledger verification failed: {exc}")
    return LedgerEvidence(text, records, True)


def gate_input(
    *,
    digest: str,
    evidence: LedgerEvidence,
    trainer_key_ids: Sequence[str],
    approver_key_ids: Sequence[str],
    thresholds: Thresholds,
) -> dict[str, Any]:
    """Build the provenance policy's input document (the shape policies/provenance expects)."""
    return {
        "digest": digest,
        "ledger": {"verified": evidence.verified, "records": evidence.records},
        "trust": {
            "trainer_key_ids": list(trainer_key_ids),
            "approver_key_ids": list(approver_key_ids),
        },
        "requirements": {
            "min_robust_accuracy": thresholds.min_robust_accuracy,
            "epsilon": thresholds.epsilon,
            "attack": thresholds.attack,
            "min_steps": thresholds.min_steps,
        },
    }


def evaluate_provenance(
    input_doc: dict[str, Any], *, opa: Path | None = None, policies_dir: Path = POLICIES_DIR
) -> dict[str, Any]:
    """Evaluate ``data.ztml.provenance.decision`` with the real OPA binary.

    Raises:
        PolicyEvaluationError: OPA is missing, fails, or returns no well-formed decision.
    """
    if opa is None:
        from service.toolchain.errors import ToolchainError
        from service.toolchain.opa import find_opa

        try:
            opa = find_opa()
        except ToolchainError as exc:
            raise PolicyEvaluationError(f"Deploy gate cannot run: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="ztml-gate-") as tmp:
        try:
            root = stage_policies(policies_dir, Path(tmp), PROVENANCE_PARTS)
            decision = opa_eval(opa, query=PROVENANCE_QUERY, input_doc=input_doc, roots=[root])
        except OpaEvalError as exc:
            raise PolicyEvaluationError(f"Deploy gate cannot evaluate the policy: {exc}") from exc
    if (
        not isinstance(decision, dict)
        or not isinstance(decision.get("allow"), bool)
        or not isinstance(decision.get("reasons"), list)
    ):
        raise PolicyEvaluationError(
            f"Deploy gate got a malformed decision from {PROVENANCE_QUERY}: {decision!r}."
        )
    return decision


def check_deploy(
    *,
    digest: str,
    evidence: LedgerEvidence,
    trainer_key_ids: Sequence[str],
    approver_key_ids: Sequence[str],
    thresholds: Thresholds,
    opa: Path | None = None,
    policies_dir: Path = POLICIES_DIR,
) -> GateResult:
    """Return the allowed decision for ``digest``, or raise with the policy's reasons.

    Raises:
        DeployDeniedError: the policy denied the digest (reasons attached).
        PolicyEvaluationError: the policy could not be evaluated.
    """
    decision = evaluate_provenance(
        gate_input(
            digest=digest,
            evidence=evidence,
            trainer_key_ids=trainer_key_ids,
            approver_key_ids=approver_key_ids,
            thresholds=thresholds,
        ),
        opa=opa,
        policies_dir=policies_dir,
    )
    if decision["allow"] is not True:
        reasons = [str(r) for r in decision["reasons"]]
        if evidence.problem:
            reasons.append(evidence.problem)
        raise DeployDeniedError(digest, reasons)
    if not evidence.verified:  # the policy must never allow this; fail closed regardless
        raise DeployDeniedError(digest, [evidence.problem or "ledger is not verified"])
    return GateResult(digest=digest, decision=decision, evidence=evidence)


def enforce_deploy_gate(config: StackConfig, *, opa: Path | None = None) -> GateResult:
    """Run the whole gate for the stack's configured digest and ledger export.

    Raises:
        DeployDeniedError: the model may not be deployed; the reasons are listed.
        LedgerExportError: the export is missing or malformed.
        PolicyEvaluationError: the policy could not be evaluated.
        ConfigError: the ledger trust keys are malformed.
    """
    evidence = verify_ledger_export(config.ledger_export, config.trust_keys)
    return check_deploy(
        digest=config.model_digest,
        evidence=evidence,
        trainer_key_ids=config.trainer_key_ids,
        approver_key_ids=config.approver_key_ids,
        thresholds=config.thresholds,
        opa=opa,
    )
