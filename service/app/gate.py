"""The service's start-up checks: its prerequisites, then the deploy gate for its model.

:func:`verify_model` runs the one deploy gate (:func:`service.gate.check_deploy`) on
``ZTML_MODEL_PATH`` against ``ZTML_LEDGER_URL`` and the keys of ``ZTML_TRUST_DIR``
(pinned to ``ZTML_MODEL_DIGEST`` when set), and on the model's OMS bundle against the
signer keys of ``ZTML_OMS_SIGNERS_DIR``, requiring the cosignature of every witness of
``ZTML_LEDGER_WITNESS_KEYS`` on the checkpoint it relies on, remembering the newest
ledger checkpoint it accepted (:func:`service.chain.seen.verifier_state`); any refusal raises
:class:`~service.app.errors.ModelRefusedError` naming every reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.app.config import AppConfig
from service.app.errors import ModelRefusedError, StartRefusedError
from service.authn import AuthnError, IssuerTrust
from service.chain.seen import verifier_state
from service.gate import GateError, GateTrust, check_deploy
from service.keys.errors import KeyError_
from service.keys.store import Signer


@dataclass(frozen=True)
class VerifiedModel:
    """A model artifact the gate allowed, with what the ledger says about it.

    Attributes:
        path: The weights file the gate verified.
        digest: Its digest (the ledger's model digest).
        name: The registered name.
        version: The registered version.
        evaluation: The registered evaluation.
        package: What ``ZTML_MODEL_PATH`` names: a model package directory, or the
            built-in digits model's weights.
        contract: The contract the registration recorded (``{"digest", "document"}``).
        calibration: The detector calibration the registration recorded.
        serving: The tenant, risk tier, batch limit and explanation rights the
            registration recorded (approved with it).
        signed_files: The files the verified OMS bundle signs, with their digests: the
            model is loaded only from bytes that match them.
    """

    path: Path
    digest: str
    name: str
    version: str
    evaluation: dict[str, Any]
    package: Path | None = None
    contract: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    serving: dict[str, Any] | None = None
    signed_files: Mapping[str, str] = field(default_factory=dict)


def preflight(config: AppConfig) -> None:
    """Check what every worker will need before any starts: token issuers, the audit key.

    Raises:
        StartRefusedError: a prerequisite is missing or unusable (named, with the fix).
    """
    problems = []
    try:
        IssuerTrust.load(config.issuers_path)
    except AuthnError as err:
        problems.append(f"token issuers unusable: {err}")
    try:
        Signer.from_file(config.home / "keys" / "audit.key", "audit")
    except KeyError_ as err:
        problems.append(f"audit signing key unusable: {err}")
    if problems:
        raise StartRefusedError("; ".join(problems), tuple(problems))


def weights_file(model_path: Path) -> Path:
    """The weights file of ``ZTML_MODEL_PATH``: a package's declared weights, or the file.

    Raises:
        ModelRefusedError: the package's contract cannot be read.
    """
    from service.model.contract import weights_path
    from service.model.errors import ModelError

    try:
        return weights_path(model_path)
    except ModelError as err:
        raise ModelRefusedError(str(err), (str(err),)) from None


def served_name(config: AppConfig) -> str:
    """The name the served model answers to in routes and policies.

    A package's declared name, else ``ZTML_MODEL_NAME``; the start-up checks hold it to
    the registered one.
    """
    from service.model.contract import CONTRACT_NAME, read_contract
    from service.model.errors import ModelError

    contract = config.model_path / CONTRACT_NAME
    if config.model_path.is_dir() and contract.exists():
        try:
            return read_contract(contract).name
        except ModelError:
            return config.model_name  # the gate refuses the package, naming the problem
    return config.model_name


def verify_model(config: AppConfig) -> VerifiedModel:
    """Run the deploy gate for ``config.model_path``.

    Raises:
        ModelRefusedError: the model may not be served; ``reasons`` says why.
    """
    artifact = weights_file(config.model_path)
    try:
        approved = check_deploy(
            trust=GateTrust.from_directory(config.trust_dir, oms_signers=config.oms_signers_dir),
            artifact=artifact,
            digest=config.model_digest,
            ledger_url=config.ledger_url,
            seen=verifier_state(config.home),
            witnesses=config.ledger_witnesses,
        )
    except GateError as err:
        raise ModelRefusedError(str(err), err.reasons) from None
    register = next((r for r in approved.records if r.get("type") == "register"), {})
    payload = register.get("payload") or {}
    return VerifiedModel(
        path=artifact,
        digest=approved.digest,
        name=approved.name,
        version=approved.version,
        evaluation=approved.evaluation,
        package=config.model_path,
        contract=payload.get("contract"),
        calibration=payload.get("calibration"),
        serving=payload.get("serving"),
        signed_files=approved.signed_files,
    )
