"""The deploy gate: serve only a model the provenance ledger and policy vouch for.

At start the service hashes its artifact, checks the digest against a pinned one (if
set), verifies the whole ledger chain and its signatures against the trust store, and
asks OPA's provenance policy whether this digest may run (registered by a trusted
trainer, evaluated robust enough, approved by someone else, not revoked). Any failure
raises :class:`~service.app.errors.ModelRefusedError` naming every reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.app.config import AppConfig
from service.app.errors import ModelRefusedError, StartRefusedError


@dataclass(frozen=True)
class VerifiedModel:
    """A model artifact the gate allowed, with what the ledger says about it."""

    path: Path
    digest: str
    size: int
    name: str
    version: str
    evaluation: dict[str, Any]


def _key_ids(trust_dir: Path, prefix: str) -> list[str]:
    from service.keys.store import key_id, load_public_key

    return sorted(key_id(load_public_key(p)) for p in sorted(trust_dir.glob(f"{prefix}*.pub")))


def preflight(config: AppConfig) -> None:
    """Check what every worker will need before any starts: token issuers, the audit key.

    Raises:
        StartRefusedError: a prerequisite is missing or unusable (named, with the fix).
    """
    from service.authn import AuthnError, IssuerTrust
    from service.keys.errors import KeyError_
    from service.keys.store import Signer

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
    from service.ledger import LedgerError, hash_artifact

    try:
        return hash_artifact(path)
    except LedgerError as err:
        raise ModelRefusedError(str(err), (str(err),)) from None


def verify_model(config: AppConfig) -> VerifiedModel:
    """Run the deploy gate for ``config.model_path``.

    Raises:
        ModelRefusedError: the model may not be served; ``reasons`` says why.
    """
    from service.authz import ProvenanceGateError, evaluate_provenance
    from service.keys.errors import KeyError_
    from service.keys.store import TrustStore
    from service.ledger import LedgerError, open_ledger

    digest, size = hash_model(config.model_path)
    if config.model_digest is not None and config.model_digest != digest:
        reason = (
            f"artifact {config.model_path} has digest {digest}, not the pinned "
            f"ZTML_MODEL_DIGEST {config.model_digest}"
        )
        raise ModelRefusedError(reason, (reason,))
    try:
        trust = TrustStore.from_directory(config.trust_dir)
        trainer_ids = _key_ids(config.trust_dir, "trainer")
        approver_ids = _key_ids(config.trust_dir, "approver")
    except KeyError_ as err:
        raise ModelRefusedError(f"trust store unusable: {err}", (str(err),)) from None
    if not trust.keys:
        reason = f"no trusted keys in {config.trust_dir} (run `ztml keys init`)"
        raise ModelRefusedError(reason, (reason,))
    try:
        with open_ledger(config.ledger_url, create=False) as ledger:
            export = ledger.export(trust)
    except LedgerError as err:
        reason = f"ledger {config.ledger_url} cannot be verified: {err}"
        raise ModelRefusedError(reason, (reason,)) from None
    records = [r for r in export["records"] if r.get("model_digest") == digest]
    policy_input = {
        "digest": digest,
        "ledger": {"verified": bool(export["verified"]), "records": records},
        "trust": {"trainer_key_ids": trainer_ids, "approver_key_ids": approver_ids},
    }
    try:
        decision = evaluate_provenance(policy_input)
    except ProvenanceGateError as err:
        raise ModelRefusedError(f"provenance policy unavailable: {err}", (str(err),)) from None
    if not decision.allow:
        raise ModelRefusedError(
            f"model {digest} refused by the provenance policy: " + "; ".join(decision.reasons),
            decision.reasons,
        )
    register = next(r for r in records if r.get("type") == "register")
    payload = register.get("payload", {})
    # Re-hash: the artifact must not have changed while the ledger was checked.
    if hash_model(config.model_path)[0] != digest:
        reason = f"artifact {config.model_path} changed during verification"
        raise ModelRefusedError(reason, (reason,))
    return VerifiedModel(
        path=config.model_path,
        digest=digest,
        size=size,
        name=str(payload.get("name", config.model_name)),
        version=str(payload.get("version", "unknown")),
        evaluation=dict(payload.get("evaluation") or {}),
    )
