"""Register a verified artifact and its metrics in the provenance ledger.

The one registration path: ``ztml model register``, ``ztml ledger register`` and
``ztml up``'s provisioning all call :func:`register_model`. Before anything is signed or
any ledger is opened, the model's OMS bundle (``model.sig`` beside the artifact) must
verify against the trusted OMS signer keys (:mod:`service.oms`), the artifact is loaded
and verified (safetensors, tensor layout, weights digest), the metrics file is
validated, and the digest and size the metrics record are checked against the
artifact's own sha256 and size. The register record carries the bundle's digest and
signer key hint, and the model's contract (for the built-in digits model
:data:`~service.model.contract.DIGITS_CONTRACT`).

A model package (a directory with ``ztml-model.json``) is registered by
:func:`register_package`: the OMS bundle must cover the whole directory, the package is
opened (:func:`service.model.package.open_model`: code, weights and data checked against
its contract) and the evaluation document (``ztml model evaluate DIR --out FILE``) checked.
The record's provenance fields are derived from the package itself:

- ``name``/``version``/``hyperparameters``: the contract's name, version and
  ``architecture.arguments``;
- ``training_data_digest``: a sha256 over the package's validation and test data files
  (the data ztml itself uses: calibration and evaluation), see :func:`package_data_digest`;
- ``code_revision``: a sha256 over the package's ``.py`` files, see
  :func:`package_code_digest`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from service.keys.errors import KeyError_
from service.keys.store import Signer
from service.ledger import LedgerError, open_ledger
from service.ledger.errors import RecordSchemaError
from service.ledger.records import Record
from service.ledger.schema import check_calibration, check_evaluation, check_serving
from service.model.artifact import load_artifact
from service.model.contract import CONTRACT_NAME, DIGITS_CONTRACT, ModelContract, read_contract
from service.model.errors import MetricsError, ModelSignatureError, RegistrationError
from service.model.metrics import check_metrics_match_artifact, read_metrics
from service.model.package import ServedModel, open_model
from service.oms import (
    OmsError,
    TrustedSigners,
    VerifiedBundle,
    default_signers_dir,
    verify_model_bundle,
)

#: The largest evaluation document accepted.
MAX_EVALUATION_BYTES = 16 * 1024 * 1024


def contract_entry(contract: ModelContract) -> dict[str, Any]:
    """Return the register record's ``contract`` field: ``{"digest", "document"}``."""
    return {"digest": contract.digest(), "document": contract.document()}


def _check_options(serving: dict[str, Any] | None, calibration: dict[str, Any] | None) -> None:
    try:
        if serving is not None:
            check_serving(serving, "serving")
        if calibration is not None:
            check_calibration(calibration, "calibration")
    except RecordSchemaError as exc:
        raise RegistrationError(f"registration refused: {exc}") from exc


#: The detectors' default false-positive rate on clean inputs, calibrated at registration.
DEFAULT_DETECTOR_FPR = 0.05


def calibrate_at_registration(served: ServedModel, fpr: float) -> dict[str, Any]:
    """Calibrate the model's perturbation detector on its validation data.

    The detector follows the modality (feature squeezing for images; the tabular
    detector for tabular inputs); its threshold flags at most ``fpr`` of the clean
    validation inputs. The returned document is the register record's ``calibration``,
    which the service recomputes and compares at every start.

    Raises:
        RegistrationError: the data cannot resolve ``fpr`` or the detector cannot be fitted.
    """
    from service.sanitizer import CalibrationError
    from service.sanitizer.calibration import calibrate_detector

    try:
        x_val, _ = served.validation()
        calibration = calibrate_detector(
            served.unit_network, served.contract, served.to_unit(x_val), fpr=fpr
        )
    except (CalibrationError, ValueError) as exc:
        raise RegistrationError(f"registration refused: detector calibration: {exc}") from exc
    return calibration.document()


def _verify_bundle(weights: Path, oms_signers: Path | None) -> VerifiedBundle:
    try:
        signers = TrustedSigners.from_directory(oms_signers or default_signers_dir())
        return verify_model_bundle(weights, signers=signers)
    except OmsError as exc:
        raise ModelSignatureError(f"registration refused: {exc}") from exc


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
    serving: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    detector_fpr: float = DEFAULT_DETECTOR_FPR,
) -> Record:
    """Write the register record of a verified artifact, signed with the trainer key.

    Args:
        artifact_path: The digits ``model.safetensors`` file, or a model package
            directory (then :func:`register_package` registers it, ``metrics_path`` is its
            evaluation document and ``serving`` is required).
        metrics_path: The ``metrics.json`` written next to it by ``ztml model train``.
        ledger_url: The ledger (default ``$ZTML_LEDGER_URL`` or ``$ZTML_HOME/ledger.db``).
        key_path: The trainer's private key (default ``$ZTML_HOME/keys/trainer.key``).
        identity: The signer identity (default ``trainer@<hostname>``).
        name: The name label (default: the metrics' ``model.name``).
        version: The version label (default: the metrics' ``model.version``).
        oms_signers: The directory of trusted OMS signer keys (default
            ``$ZTML_TRUST_DIR/oms_signers``, or ``$ZTML_HOME/keys/oms_signers``).
        serving: Optional ``{"tenant", "risk_tier", "max_batch", "explanations"}``.
        calibration: Optional detector calibration (``Calibration.document()``); by
            default it is calibrated here on the model's validation data.
        detector_fpr: The false-positive rate that calibration targets.

    Returns:
        The appended ledger record.

    Raises:
        ArtifactError: The artifact is missing, corrupt or not a DigitsNet.
        MetricsError: The metrics are malformed or describe another artifact.
        ModelSignatureError: The OMS bundle is missing, untrusted or does not verify.
        RegistrationError: The key cannot be used, an option is malformed or the ledger
            refuses the record.
    """
    if Path(artifact_path).is_dir() and (Path(artifact_path) / CONTRACT_NAME).is_file():
        if serving is None:
            raise RegistrationError(
                "registration refused: serving: a model package needs its serving settings "
                "(tenant, risk tier, max batch, explanations); register it with `ztml model "
                "register DIR --evaluation FILE --tenant T --risk-tier R --max-batch N`"
            )
        if name is not None or version is not None:
            raise RegistrationError(
                "registration refused: a model package's name and version come from its "
                f"{CONTRACT_NAME}; do not override them"
            )
        return register_package(
            artifact_path,
            evaluation_path=metrics_path,
            serving=serving,
            calibration=calibration,
            detector_fpr=detector_fpr,
            ledger_url=ledger_url,
            key_path=key_path,
            identity=identity,
            oms_signers=oms_signers,
        )
    _check_options(serving, calibration)
    bundle = _verify_bundle(Path(artifact_path), oms_signers).bundle
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
                contract=contract_entry(DIGITS_CONTRACT),
                calibration=calibration
                or calibrate_at_registration(open_model(artifact_path), detector_fpr),
                serving=serving,
            )
    except (KeyError_, LedgerError) as exc:
        raise RegistrationError(f"registration failed: {exc}") from exc


def _files_digest(tag: str, root: Path, files: list[Path]) -> str:
    """sha256 over a domain tag, then per file its relative POSIX path, size and bytes."""
    h = hashlib.sha256(f"ztml/{tag}/v1\n".encode())
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        data = path.read_bytes()
        h.update(f"{path.relative_to(root).as_posix()}\n{len(data)}\n".encode())
        h.update(data)
    return f"sha256:{h.hexdigest()}"


def package_data_digest(package_dir: Path | str, contract: ModelContract) -> str:
    """Return the ``training_data_digest`` recorded for a package.

    A package ships no training data; what ztml uses is its validation data (detector
    calibration) and test data (evaluation), so the digest covers those two files: sha256
    of the line ``ztml/package-data/v1``, then for each file in path order its path relative to
    the package, its size and its bytes.
    """
    root = Path(package_dir).resolve()
    return _files_digest(
        "package-data", root, [root / contract.data[k] for k in ("validation", "test")]
    )


def package_code_digest(package_dir: Path | str) -> str:
    """Return the ``code_revision`` recorded for a package: a sha256 over its ``.py`` files.

    sha256 of the line ``ztml/package-code/v1``, then for every ``*.py`` file under the package
    (sorted by relative POSIX path) its path, size and bytes; ``sha256:<hex>``.
    """
    root = Path(package_dir).resolve()
    return _files_digest("package-code", root, [p for p in root.rglob("*.py") if p.is_file()])


def read_evaluation(path: Path | str) -> dict[str, Any]:
    """Read an evaluation document (``ztml model evaluate DIR --out FILE``).

    The file is the evaluation document, with the ``model_digest`` of the weights it
    evaluated (what ``ztml model evaluate DIR --out FILE`` writes), or
    ``{"digest", "evaluation"}`` (what ``--json`` prints).

    Returns:
        The parsed document.

    Raises:
        MetricsError: If the file is missing, too large, not JSON or malformed.
    """
    source = Path(path)
    try:
        if source.stat().st_size > MAX_EVALUATION_BYTES:
            raise MetricsError(f"evaluation file {source} is larger than {MAX_EVALUATION_BYTES}")
        doc = json.loads(source.read_text())
    except OSError as exc:
        raise MetricsError(f"cannot read evaluation file {source}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetricsError(f"evaluation file {source} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MetricsError(f"evaluation file {source}: must be a JSON object")
    return doc


def _package_evaluation(path: Path | str, *, digest: str, dataset: str) -> dict[str, Any]:
    doc = read_evaluation(path)
    if "evaluation" in doc and "digest" in doc:  # the form `evaluate --json` prints
        evaluation, recorded = doc["evaluation"], doc["digest"]
    else:  # the form `evaluate --out` writes
        evaluation = {k: v for k, v in doc.items() if k != "model_digest"}
        recorded = doc.get("model_digest")
    if recorded is not None and recorded != digest:
        raise MetricsError(
            f"the evaluation in {path} was computed for weights {recorded}, but the package's "
            f"weights are {digest}; run `ztml model evaluate` on this package again"
        )
    try:
        check_evaluation(evaluation, "evaluation")
    except RecordSchemaError as exc:
        raise MetricsError(f"evaluation file {path} is malformed: {exc}") from exc
    if evaluation.get("dataset", dataset) != dataset:
        raise MetricsError(
            f"the evaluation in {path} is of dataset {evaluation['dataset']!r}, not this "
            f"package's {dataset!r}"
        )
    return evaluation


def register_package(
    package_dir: Path | str,
    *,
    evaluation_path: Path | str,
    serving: dict[str, Any],
    calibration: dict[str, Any] | None = None,
    detector_fpr: float = DEFAULT_DETECTOR_FPR,
    ledger_url: str | Path | None = None,
    key_path: Path | None = None,
    identity: str | None = None,
    oms_signers: Path | None = None,
) -> Record:
    """Register a model package (``ztml-model.json`` and its files), signed as trainer.

    Args:
        package_dir: The package directory, signed as a whole (``ztml model sign DIR``).
        evaluation_path: The evaluation written by ``ztml model evaluate DIR --out FILE``.
        serving: ``{"tenant", "risk_tier", "max_batch", "explanations"}``.
        calibration: Optional detector calibration (``Calibration.document()``); by
            default it is calibrated here on the model's validation data.
        detector_fpr: The false-positive rate that calibration targets.
        ledger_url: The ledger (default ``$ZTML_LEDGER_URL`` or ``$ZTML_HOME/ledger.db``).
        key_path: The trainer's private key (default ``$ZTML_HOME/keys/trainer.key``).
        identity: The signer identity (default ``trainer@<hostname>``).
        oms_signers: The directory of trusted OMS signer keys.

    Returns:
        The appended ledger record (with ``contract``, ``serving`` and, if given,
        ``calibration``).

    Raises:
        ContractError: The contract is malformed.
        PackageError: The code, weights or data do not fit the contract, or a file
            changed after its OMS signature was verified.
        MetricsError: The evaluation is malformed or of other weights or data.
        ModelSignatureError: The OMS bundle is missing, untrusted, does not verify or
            leaves a file unsigned.
        RegistrationError: The key cannot be used, an option is malformed or the ledger
            refuses the record.
    """
    root = Path(package_dir)
    if not (root / CONTRACT_NAME).is_file():
        raise RegistrationError(
            f"registration refused: {root} has no {CONTRACT_NAME}; it is not a model package"
        )
    _check_options(serving, calibration)
    weights = root / read_contract(root / CONTRACT_NAME).weights
    verified = _verify_bundle(weights, oms_signers)
    if verified.model_path.resolve() != root.resolve():
        raise ModelSignatureError(
            f"registration refused: the OMS bundle signs only {verified.model_path}, not the "
            f"whole package {root}; sign the directory with `ztml model sign {root}`"
        )
    # Every file is read as the bundle just verified signs it (a swap meanwhile is refused).
    served = open_model(root, signed_files=verified.bundle.file_digests())
    contract = served.contract
    if calibration is None:
        calibration = calibrate_at_registration(served, detector_fpr)
    evaluation = _package_evaluation(
        evaluation_path, digest=served.weights_digest, dataset=f"{contract.name}/test"
    )
    signed = verified.bundle.signed_digest(served.weights_path)
    if signed is not None and signed != served.weights_digest:
        raise ModelSignatureError(
            f"registration refused: the OMS bundle signs {signed} for {served.weights_path}, "
            f"but the weights loaded have digest {served.weights_digest} (they changed "
            "meanwhile); retry"
        )
    try:
        signer = Signer.for_role(
            "trainer", key=Path(key_path) if key_path else None, identity=identity
        )
        with open_ledger(ledger_url) as ledger:
            return ledger.register(
                signer=signer,
                name=contract.name,
                version=contract.version,
                artifact={
                    "digest": served.weights_digest,
                    "format": "safetensors",
                    "size": served.weights_size,
                },
                training_data_digest=package_data_digest(root, contract),
                code_revision=package_code_digest(root),
                hyperparameters=dict(contract.arguments),
                evaluation=evaluation,
                oms_bundle=verified.bundle.ledger_entry(),
                contract=contract_entry(contract),
                calibration=calibration,
                serving=serving,
            )
    except (KeyError_, LedgerError) as exc:
        raise RegistrationError(f"registration failed: {exc}") from exc
