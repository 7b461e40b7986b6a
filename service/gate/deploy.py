"""The deploy gate: deploy only a model the provenance ledger and policy vouch for.

One function, :func:`check_deploy`, used by the service at start, by the Pulumi program
before it declares the model Deployment, and by the pod's ledger-seed init step
(:mod:`service.ledger.seed`) before it writes a record. It hashes the artifact (or
takes the configured digest), verifies the whole ledger, or a ledger export file, against
the trusted keys, builds the one provenance-policy input (digest, the verified ledger
records of that digest, the trusted trainer and approver key ids, the requirements of
``policies/data/provenance.json``), evaluates ``data.ztml.provenance.decision`` with the
real OPA, and returns only an approved model. Given the artifact's path (the service
start, the pod's init step), it also verifies the model's OMS bundle (``model.sig``
beside it) against the trusted OMS signer keys (:mod:`service.oms`). Anything else
raises a :class:`~service.gate.errors.GateError` carrying every reason; nothing is ever
returned as "not verified".

No completeness without proof: the digest's records (its registration, evaluations,
approvals and any revocation) must be covered by the ledger's newest signed checkpoint,
and, given the verifier's kept checkpoints (``seen``), the ledger must not have been cut
back or rolled back since this verifier last saw it.

Witnesses: given witness keys (``cosignature/v1`` verifiers), the checkpoint relied upon
must carry a valid cosignature by every one of them; from a ledger that is the newest
checkpoint they all cosigned, from an export the export's checkpoint. A missing
cosignature, one by another key, or one that does not verify over that checkpoint
refuses the model, naming the witness. With no witness keys none is required.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.authz.errors import ProvenanceGateError
from service.authz.provenance import evaluate_provenance
from service.chain.note import Verifier
from service.chain.seen import SeenCheckpoints
from service.gate.errors import (
    GateArtifactError,
    GateEvidenceError,
    GateTrustError,
    GateUnavailableError,
    ModelDeniedError,
)
from service.gate.requirements import Requirements, load_requirements
from service.keys.errors import KeyError_
from service.keys.store import TrustStore, key_id, load_public_key
from service.ledger.artifact import hash_artifact
from service.ledger.checkpoints import require_coverage
from service.ledger.errors import LedgerError, LedgerIntegrityError
from service.ledger.factory import open_ledger
from service.ledger.verify import (
    Export,
    VerifyReport,
    parse_export_document,
    verify_export,
)
from service.oms import (
    OmsBundle,
    OmsError,
    TrustedSigners,
    signers_dir,
    verify_model_bundle,
)


@dataclass(frozen=True)
class GateTrust:
    """Who the gate trusts: the keys that may sign ledger records, and their roles.

    Attributes:
        store: Public keys trusted to sign ledger records.
        trainer_key_ids: Key ids trusted to register and evaluate models.
        approver_key_ids: Key ids trusted to approve and revoke models.
        oms_signers: Keys trusted to sign OMS bundles (needed to check an artifact).
    """

    store: TrustStore
    trainer_key_ids: tuple[str, ...]
    approver_key_ids: tuple[str, ...]
    oms_signers: TrustedSigners | None = None

    @classmethod
    def from_directory(cls, directory: Path, *, oms_signers: Path | None = None) -> GateTrust:
        """Trust every ``*.pub`` of ``directory``; roles by name (``trainer*``, ``approver*``).

        The OMS signers are the ``*.pub`` of ``oms_signers`` (default
        ``$ZTML_OMS_SIGNERS_DIR`` or ``<directory>/oms_signers``).

        Raises:
            GateTrustError: a key file is unusable, the directory holds no key, or no OMS
                signer key is trusted.
        """
        try:
            store = TrustStore.from_directory(directory)
            roles = {
                role: tuple(
                    sorted(key_id(load_public_key(p)) for p in directory.glob(f"{role}*.pub"))
                )
                for role in ("trainer", "approver")
            }
        except KeyError_ as err:
            raise GateTrustError(f"trust store unusable: {err}") from None
        if not store.keys:
            raise GateTrustError(f"no trusted keys in {directory} (run `ztml keys init`)")
        try:
            signers = TrustedSigners.from_directory(oms_signers or signers_dir(directory))
        except OmsError as err:
            raise GateTrustError(str(err)) from None
        return cls(store, roles["trainer"], roles["approver"], signers)


@dataclass(frozen=True)
class ApprovedModel:
    """A model the gate allowed, with what its trusted registration says about it.

    Attributes:
        digest: The artifact's ``sha256:<hex>`` digest.
        size: The artifact's size in bytes (None when only a digest was checked).
        name: The registered name label.
        version: The registered version label.
        evaluation: The registered evaluation results.
        records: The verified ledger records of this digest, as exported.
        export_text: The verified export file's text, when the gate read one (to hand
            on exactly what was checked, e.g. to the pod's ledger seeding).
        oms_bundle: The digest of the OMS bundle verified with the artifact, if one was.
        signed_files: What that bundle signs, file by file (``{name: "sha256:<hex>"}``,
            names relative to the model directory), so whoever loads the model can hold
            every file it reads to the signature just verified.
    """

    digest: str
    size: int | None
    name: str
    version: str
    evaluation: dict[str, Any]
    records: tuple[dict[str, Any], ...]
    export_text: str | None = None
    oms_bundle: str | None = None
    signed_files: Mapping[str, str] = field(default_factory=dict)


def check_deploy(
    *,
    trust: GateTrust,
    artifact: Path | None = None,
    digest: str | None = None,
    ledger_url: str | None = None,
    ledger_export: Path | None = None,
    requirements: Requirements | None = None,
    opa: Path | None = None,
    seen: SeenCheckpoints | None = None,
    witnesses: Sequence[Verifier] = (),
) -> ApprovedModel:
    """Return the approved model, or raise with every reason it may not be deployed.

    Args:
        trust: The trusted ledger keys and their roles (and OMS signers, for ``artifact``).
        artifact: The model file to hash and whose OMS bundle to verify; re-hashed after
            the checks (it must not change).
        digest: The digest to deploy; with ``artifact``, the digest it is pinned to.
        ledger_url: Verify this ledger (exactly one of ``ledger_url``, ``ledger_export``).
        ledger_export: Verify this ``ztml ledger export`` file instead.
        requirements: Requirements overriding ``policies/data/provenance.json``'s.
        opa: The ``opa`` binary (default: the project's, see ``service.toolchain.opa``).
        seen: This verifier's kept checkpoints: the ledger must be consistent with the
            one kept for it, and the newest one verified here is kept.
        witnesses: Witnesses that must all have cosigned the checkpoint relied upon
            (none: no cosignature is required).

    Raises:
        ModelDeniedError: the artifact does not match the pinned digest, its OMS bundle
            is missing, untrusted or does not verify, the ledger does not verify, or the
            provenance policy denied the digest (every reason).
        GateEvidenceError: the ledger or export cannot be read or is not records.
        GateArtifactError: the artifact cannot be read.
        GateTrustError: no key is trusted (no OMS signer, for an artifact).
        GateUnavailableError: the policy cannot be evaluated.
        ValueError: not exactly one ledger source, or neither artifact nor digest
            (a caller's mistake, not a refusal).
    """
    if ledger_url is not None and ledger_export is not None:
        raise ValueError("check_deploy takes one of ledger_url and ledger_export, not both")
    size: int | None = None
    bundle: OmsBundle | None = None
    oms_problems: list[str] = []
    if artifact is not None:
        actual, size = _hash(artifact)
        bundle, oms_problems = _check_signature(artifact, actual, trust)
        if digest is not None and digest != actual:
            pinned = f"artifact {artifact} has digest {actual}, not the pinned digest {digest}"
            raise ModelDeniedError("; ".join([pinned, *oms_problems]), [pinned, *oms_problems])
        digest = actual
    if digest is None:
        raise ValueError("check_deploy needs an artifact or a digest")
    if not trust.store.keys:
        raise GateTrustError("no ledger keys are trusted: nothing can verify the ledger")
    export_text = None
    if ledger_export is not None:
        export_text = _read_export(ledger_export)
        export = _parse_export(ledger_export, export_text)
        where, failed = f"ledger export {ledger_export}", "is not verified: verification failed at"
    elif ledger_url is not None:
        export = _ledger_export(ledger_url, witnesses)
        where, failed = f"ledger {ledger_url}", "cannot be verified:"
    else:
        raise ValueError("check_deploy needs a ledger_url or a ledger_export")
    if witnesses and export.checkpoint is None:
        raise ModelDeniedError(f"{where}: {_uncosigned(witnesses)}")
    report = _verify(f"{where} {failed}", export, trust.store, seen, witnesses)
    records = [dict(r) for r in export.records]
    mine = [r for r in records if r.get("model_digest") == digest]
    _require_checkpoint(where, report, mine, digest, witnesses)
    policy_input = {
        "digest": digest,
        "ledger": {"verified": True, "records": mine},
        "trust": {
            "trainer_key_ids": list(trust.trainer_key_ids),
            "approver_key_ids": list(trust.approver_key_ids),
        },
        "requirements": (requirements or load_requirements()).to_input(),
    }
    try:
        decision = evaluate_provenance(policy_input, opa_binary=opa)
    except ProvenanceGateError as err:
        raise GateUnavailableError(f"provenance policy unavailable: {err}") from None
    if not decision.allow:
        raise ModelDeniedError(
            f"model {digest} refused by the provenance policy: "
            + "; ".join([*decision.reasons, *oms_problems]),
            [*decision.reasons, *oms_problems],
        )
    if oms_problems:
        raise ModelDeniedError(f"model {digest} refused: " + "; ".join(oms_problems))
    if artifact is not None and _hash(artifact)[0] != digest:
        raise ModelDeniedError(f"artifact {artifact} changed during verification")
    register = next((r for r in mine if r.get("type") == "register"), None)
    if register is None:  # the policy never allows this; fail closed regardless
        raise ModelDeniedError(f"no register record for {digest}")
    payload = register.get("payload", {})
    return ApprovedModel(
        digest=digest,
        size=size,
        name=str(payload.get("name", "unknown")),
        version=str(payload.get("version", "unknown")),
        evaluation=dict(payload.get("evaluation") or {}),
        records=tuple(mine),
        export_text=export_text,
        oms_bundle=None if bundle is None else bundle.digest,
        signed_files={} if bundle is None else bundle.file_digests(),
    )


def _check_signature(
    artifact: Path, digest: str, trust: GateTrust
) -> tuple[OmsBundle | None, list[str]]:
    """Verify the artifact's OMS bundle; return it, or the reason it is refused.

    Raises:
        GateTrustError: no OMS signer key is trusted (nothing could be verified).
    """
    if trust.oms_signers is None:
        raise GateTrustError(
            "no OMS signer keys are trusted: the artifact's signature cannot be verified "
            "(put the signers' public keys in the trust directory's oms_signers/)"
        )
    try:
        bundle = verify_model_bundle(artifact, signers=trust.oms_signers).bundle
    except OmsError as err:
        return None, [f"OMS signature refused: {err}"]
    signed = bundle.signed_digest(artifact)
    if signed is not None and signed != digest:
        return None, [f"OMS signature refused: {bundle.path} signs {signed}, not {digest}"]
    return bundle, []


def _hash(artifact: Path) -> tuple[str, int]:
    try:
        return hash_artifact(artifact)
    except LedgerError as err:
        raise GateArtifactError(str(err)) from None


def _ledger_export(url: str, witnesses: Sequence[Verifier]) -> Export:
    try:
        with open_ledger(url, create=False) as ledger:
            document = ledger.export(witnesses=witnesses)
    except LedgerError as err:
        raise GateEvidenceError(f"ledger {url} cannot be read: {err}") from None
    return Export(list(document["records"]), document["checkpoint"])


def _uncosigned(witnesses: Sequence[Verifier]) -> str:
    names = ", ".join(w.name for w in witnesses)
    return (
        f"no signed checkpoint cosigned by the witness(es) {names}; each witness cosigns "
        "the newest with `ztml ledger cosign`, and `ztml ledger export --witness VKEY` "
        "exports the newest they all cosigned"
    )


def _verify(
    where: str,
    export: Export,
    trust: TrustStore,
    seen: SeenCheckpoints | None,
    witnesses: Sequence[Verifier],
) -> VerifyReport:
    try:
        return verify_export(
            {"records": export.records, "checkpoint": export.checkpoint},
            trust,
            seen=seen,
            witnesses=witnesses,
        )
    except LedgerIntegrityError as err:
        raise ModelDeniedError(f"{where} {err}") from None


def _require_checkpoint(
    where: str,
    report: VerifyReport,
    mine: list[dict[str, Any]],
    digest: str,
    witnesses: Sequence[Verifier],
) -> None:
    try:
        require_coverage(report.tree, [int(r["seq"]) for r in mine], f"model {digest}'s record")
    except LedgerIntegrityError as err:
        cosigned = (
            f" (the checkpoint relied upon is the newest cosigned by the witness(es) "
            f"{', '.join(w.name for w in witnesses)}: have them cosign a newer one)"
            if witnesses
            else ""
        )
        raise ModelDeniedError(f"{where}: {err}{cosigned}") from None


def _read_export(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        detail = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise GateEvidenceError(
            f"Cannot read the ledger export {path} ({detail}); write it with "
            "`ztml ledger export --out <file>`."
        ) from None


def _parse_export(path: Path, text: str) -> Export:
    try:
        return parse_export_document(text)
    except LedgerIntegrityError as err:
        raise GateEvidenceError(f"Ledger export {path} {err.reason}.") from None
