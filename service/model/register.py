"""Register a verified artifact and its metrics in the provenance ledger.

The one registration path: ``ztml model register``, ``ztml ledger register`` and
``ztml up``'s provisioning all call :func:`register_model`. Before anything is signed or
any ledger is opened, the model's OMS bundle (``model.sig`` beside the artifact) must
verify against the trusted OMS signer keys (:mod:`service.oms`), the artifact is loaded
and verified (safetensors, tensor layout, weights digest), the metrics file is
validated, and the digest and size the metrics record are checked against the
artifact's own sha256 and size. The register record carries the bundle's digest and
signer key hint.
"""

from __future__ import annotations

from pathlib import Path

from service.keys.errors import KeyError_
from service.keys.store import Signer
from service.ledger import LedgerError, open_ledger
from service.ledger.records import Record
from service.model.artifact import load_artifact
from service.model.errors import MetricsError, ModelSignatureError, RegistrationError
from service.model.metrics import check_metrics_match_artifact, read_metrics
from service.oms import OmsError, TrustedSigners, default_signers_dir, verify_model_bundle


def register_model(
    artifact_path: Path | str,
    metrics_path: Path | str,
    *,
    ledger_url: str | Path | None = None,
    key_path: Path | None = None,
    identity: str | None = None,
    name: str | None = None,
    version: str | None = None,
    oms_signers: Path | None = None,
) -> Record:
    """Write the register record of a verified artifact, signed with the trainer key.

    Args:
        artifact_path: The ``model.safetensors`` file.
        metrics_path: The ``metrics.json`` written next to it by ``ztml model train``.
        ledger_url: The ledger (default ``$ZTML_LEDGER_URL`` or ``$ZTML_HOME/ledger.db``).
        key_path: The trainer's private key (default ``$ZTML_HOME/keys/trainer.key``).
        identity: The signer identity (default ``trainer@<hostname>``).
        name: The name label (default: the metrics' ``model.name``).
        version: The version label (default: the metrics' ``model.version``).
        oms_signers: The directory of trusted OMS signer keys (default
            ``$ZTML_TRUST_DIR/oms_signers``, or ``$ZTML_HOME/keys/oms_signers``).

    Returns:
        The appended ledger record.

    Raises:
        ArtifactError: The artifact is missing, corrupt or not a DigitsNet.
        MetricsError: The metrics are malformed or describe another artifact.
        ModelSignatureError: The OMS bundle is missing, untrusted or does not verify.
        RegistrationError: The key cannot be used or the ledger refuses the record.
    """
    try:
        signers = TrustedSigners.from_directory(oms_signers or default_signers_dir())
        bundle = verify_model_bundle(Path(artifact_path), signers=signers).bundle
    except OmsError as exc:
        raise ModelSignatureError(f"registration refused: {exc}") from exc
    artifact = load_artifact(artifact_path)
    metrics = read_metrics(metrics_path)
    check_metrics_match_artifact(metrics, digest=artifact.digest, size=artifact.size)
    model = metrics["model"]
    for field in ("version", "defense"):
        if artifact.metadata.get(field) != model[field]:
            raise MetricsError(
                f"the metrics say {field} {model[field]!r} but the artifact's metadata says "
                f"{artifact.metadata.get(field)!r}; use the metrics.json written with it"
            )
    signed = bundle.signed_digest(Path(artifact_path))
    if signed is not None and signed != artifact.digest:
        raise ModelSignatureError(
            f"registration refused: the OMS bundle signs {signed} for {artifact_path}, but "
            f"the artifact loaded has digest {artifact.digest} (it changed meanwhile); retry"
        )
    try:
        signer = Signer.for_role(
            "trainer", key=Path(key_path) if key_path else None, identity=identity
        )
        with open_ledger(ledger_url) as ledger:
            return ledger.register(
                signer=signer,
                name=name or model["name"],
                version=version or model["version"],
                artifact={
                    "digest": artifact.digest,
                    "format": metrics["artifact"]["format"],
                    "size": artifact.size,
                },
                training_data_digest=metrics["training_data_digest"],
                code_revision=metrics["code_revision"],
                hyperparameters=metrics["hyperparameters"],
                evaluation=metrics["evaluation"],
                oms_bundle=bundle.ledger_entry(),
            )
    except (KeyError_, LedgerError) as exc:
        raise RegistrationError(f"registration failed: {exc}") from exc
