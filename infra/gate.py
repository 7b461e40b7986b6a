"""The deploy gate in the program: the model Deployment is declared only for an approved digest.

Before the program declares the model service it runs the service's deploy gate
(:func:`service.gate.check_deploy`, the same function the service runs at start) on the
configured digest and the ledger export named by ``ztml:ledgerExport`` (written by
``ztml ledger export``), with the ledger trust keys, trainer and approver key ids and
requirements of the stack configuration; the export's signed checkpoint must cover the
model's records (and, with ``ztml:ledgerWitnessKeys``, carry a valid cosignature by every
witness listed), and the newest checkpoint the program accepted is kept
(:func:`service.chain.seen.verifier_state`) so a ledger rolled back since is refused.
This module only maps the configuration onto
that call and the gate's errors onto the program's: a denial raises
:class:`DeployDeniedError` with every reason, so ``pulumi preview`` and ``pulumi up`` fail
before any resource is touched; anything that cannot be checked fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from infra.config import StackConfig, TrustKey
from infra.errors import (
    ConfigError,
    DeployDeniedError,
    InfraError,
    LedgerExportError,
    ModelNameError,
    ModelsDeniedError,
    PolicyEvaluationError,
)
from service.chain.seen import verifier_state
from service.chain.tlog import parse_witness_keys
from service.gate import (
    ApprovedModel,
    GateError,
    GateEvidenceError,
    GateTrust,
    GateTrustError,
    GateUnavailableError,
    check_deploy,
)
from service.keys.store import TrustStore, key_id


def _trust_store(keys: Sequence[TrustKey]) -> TrustStore:
    """Build the ledger trust store from ``ztml:ledgerTrustKeys``.

    Raises:
        ConfigError: a key is not an Ed25519 PEM public key, or its key id does not match.
    """
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


def _infra_error(err: GateError, digest: str) -> InfraError:
    if isinstance(err, GateEvidenceError):
        return LedgerExportError(f"{err} Set `ztml:ledgerExport` to the export's path.")
    if isinstance(err, GateUnavailableError):
        return PolicyEvaluationError(f"Deploy gate cannot evaluate the policy: {err}")
    if isinstance(err, GateTrustError):
        return ConfigError(f"Invalid config ztml:ledgerTrustKeys: {err}.")
    return DeployDeniedError(digest, list(err.reasons))


@dataclass(frozen=True)
class GatePassed:
    """The gate approved the stack's model.

    Attributes:
        digest: The approved model digest.
        export_text: The ledger export exactly as verified, to mount into the pod.
        model: What the gate approved.
    """

    digest: str
    export_text: str
    model: ApprovedModel


def enforce_deploy_gate(
    config: StackConfig, *, opa: Path | None = None, digest: str | None = None
) -> GatePassed:
    """Run the deploy gate for the stack's configured digest and ledger export.

    Args:
        config: The stack's configuration (trust, requirements, the ledger export).
        opa: The OPA binary (default: the pinned one).
        digest: The digest to check instead of the primary model's (an extra model's).

    Raises:
        DeployDeniedError: the model may not be deployed; the reasons are listed.
        LedgerExportError: the export is missing or malformed.
        PolicyEvaluationError: the policy could not be evaluated.
        ConfigError: the ledger trust keys are malformed.
    """
    trust = GateTrust(
        store=_trust_store(config.trust_keys),
        trainer_key_ids=tuple(config.trainer_key_ids),
        approver_key_ids=tuple(config.approver_key_ids),
    )
    digest = config.model_digest if digest is None else digest
    try:
        approved = check_deploy(
            trust=trust,
            digest=digest,
            ledger_export=config.ledger_export,
            requirements=config.requirements,
            opa=opa,
            seen=verifier_state(),
            witnesses=parse_witness_keys(config.ledger_witness_keys),
        )
    except GateError as err:
        raise _infra_error(err, digest) from err
    if approved.export_text is None:  # check_deploy read the export; fail closed regardless
        raise LedgerExportError(f"The deploy gate did not read {config.ledger_export}.")
    return GatePassed(approved.digest, approved.export_text, approved)


def enforce_models_gate(config: StackConfig, *, opa: Path | None = None) -> dict[str, GatePassed]:
    """Run the deploy gate for each extra model of ``ztml:models``, each on its own.

    Every model is checked before any is refused, so one run names every refused model
    and every reason of each. A model's name must be the one its digest is registered
    as (its contract's name).

    Returns:
        Each model's name and what the gate approved, in config order.

    Raises:
        ModelsDeniedError: at least one model may not be deployed (each refusal listed).
    """
    passed: dict[str, GatePassed] = {}
    refused: list[tuple[str, InfraError]] = []
    for model in config.models:
        try:
            gate = enforce_deploy_gate(config, opa=opa, digest=model.digest)
        except InfraError as err:
            refused.append((model.name, err))
            continue
        if gate.model.name != model.name:
            refused.append((model.name, ModelNameError(model.name, model.digest, gate.model.name)))
            continue
        passed[model.name] = gate
    if refused:
        raise ModelsDeniedError(refused)
    return passed
