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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.app.config import AppConfig
from service.app.errors import ModelRefusedError, StartRefusedError
from service.authn import AuthnError, IssuerTrust
from service.chain.seen import verifier_state
from service.gate import GateError, GateTrust, check_deploy
from service.keys.errors import KeyError_
from service.keys.store import Signer
from service.ledger import LedgerError, hash_artifact


@dataclass(frozen=True)
class VerifiedModel:
    """A model artifact the gate allowed, with what the ledger says about it."""

    path: Path
    digest: str
    name: str
    version: str
    evaluation: dict[str, Any]


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


def hash_model(path: Path) -> tuple[str, int]:
    """Return the artifact's ``(digest, size)``.

    Raises:
        ModelRefusedError: the artifact cannot be read.
    """
    try:
        return hash_artifact(path)
    except LedgerError as err:
        raise ModelRefusedError(str(err), (str(err),)) from None


def verify_model(config: AppConfig) -> VerifiedModel:
    """Run the deploy gate for ``config.model_path``.

    Raises:
        ModelRefusedError: the model may not be served; ``reasons`` says why.
    """
    try:
        approved = check_deploy(
            trust=GateTrust.from_directory(config.trust_dir, oms_signers=config.oms_signers_dir),
            artifact=config.model_path,
            digest=config.model_digest,
            ledger_url=config.ledger_url,
            seen=verifier_state(config.home),
            witnesses=config.ledger_witnesses,
        )
    except GateError as err:
        raise ModelRefusedError(str(err), err.reasons) from None
    return VerifiedModel(
        path=config.model_path,
        digest=approved.digest,
        name=approved.name,
        version=approved.version,
        evaluation=approved.evaluation,
    )
