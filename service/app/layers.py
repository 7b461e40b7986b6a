"""The layers one worker process serves with, built once when the worker starts.

Each layer is the real component of its package (authn, monitor, authz, sanitizer,
model, explainer, review, audit); this module only wires them to the configuration.
State shared by workers (rate limits, flood and extraction signals, the review queue)
lives in SQLite under ``$ZTML_HOME``, or in the PostgreSQL database of
``ZTML_MONITOR_URL`` that every replica shares; each worker writes its own audit chain.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.app.config import AppConfig
from service.app.errors import ModelRefusedError
from service.app.gate import VerifiedModel
from service.audit import AuditLog, open_audit_log
from service.authn import IssuerTrust, JWTVerifier
from service.authz import OpaAuthorizer
from service.authz.tls import OpaTls
from service.model.errors import ModelError
from service.monitor import DriftMonitor, ExtractionDetector, FloodDetector, RateLimiter
from service.review import ReviewQueue
from service.sanitizer import CalibrationError
from service.sanitizer.calibration import (
    Calibration,
    Detector,
    build_detector,
    calibrate_detector,
    verify_calibration,
)

if TYPE_CHECKING:
    from torch import nn

    from service.model.contract import ModelContract
    from service.model.package import ServedModel

_log = logging.getLogger(__name__)


@dataclass
class Layers:
    """The components of the request path, in the order requests meet them."""

    config: AppConfig
    model_info: VerifiedModel
    verifier: JWTVerifier
    rate_limiter: RateLimiter
    flood: FloodDetector
    extraction: ExtractionDetector
    authorizer: OpaAuthorizer
    model: nn.Module
    squeezer: Detector
    drift: DriftMonitor
    review: ReviewQueue
    audit: AuditLog
    drift_lock: threading.Lock
    served: ServedModel | None = None

    @property
    def contract(self) -> ModelContract:
        """The served model's declared input contract."""
        from service.model.contract import DIGITS_CONTRACT

        return self.served.contract if self.served is not None else DIGITS_CONTRACT

    def close(self) -> None:
        """Flush and close what holds files (the audit chain gets its final checkpoint)."""
        try:
            self.audit.close()
        except Exception:  # shutting down: log, never raise
            _log.warning("closing the audit log failed", exc_info=True)


def _refused(reason: str) -> ModelRefusedError:
    return ModelRefusedError(reason, (reason,))


def load_verified_model(info: VerifiedModel) -> ServedModel:
    """Load the model the gate verified, checking it is still the same and as registered.

    The weights must still have the verified digest; every file of a package is read
    only if it matches the OMS bundle the gate verified (so nothing replaced after that
    check is compiled or loaded); its contract must be the one its registration
    recorded (same digest) and declare the registered name.

    Raises:
        ModelRefusedError: the model changed since it was verified, does not load, or
            differs from its registration.
    """
    import torch  # heavy: imported when a worker loads its model, not with this module

    from service.model.package import open_model

    try:
        served = open_model(info.package or info.path, signed_files=info.signed_files)
    except ModelError as err:
        raise ModelRefusedError(f"model {info.path} does not load: {err}", (str(err),)) from None
    if served.weights_digest != info.digest:  # the digest of the bytes actually loaded
        raise _refused(
            f"artifact {info.path} changed after verification ({served.weights_digest} != "
            f"{info.digest})"
        )
    if not served.builtin:
        recorded = (info.contract or {}).get("digest")
        if recorded is None:
            raise _refused(
                f"model {served.path} was registered without its contract; register it again "
                "with `ztml model register`"
            )
        if recorded != served.contract.digest():
            raise _refused(
                f"the contract of {served.path} ({served.contract.digest()}) differs from the "
                f"one registered for {info.digest} ({recorded}); a changed contract needs a "
                "new registration"
            )
        if served.contract.name != info.name:
            raise _refused(
                f"the contract of {served.path} names the model {served.contract.name!r}, "
                f"registered as {info.name!r}"
            )
    for network in (served.network, served.unit_network):
        network.eval()
        for parameter in network.parameters():
            parameter.requires_grad_(False)
    torch.set_num_threads(1)
    return served


def _detector(config: AppConfig, info: VerifiedModel, served: ServedModel) -> Detector:
    """The perturbation detector with the calibration the registration recorded.

    The calibration is recomputed from the (signed) validation data and must match the
    recorded one; a package without a recorded calibration is refused. The built-in
    digits model registered before calibrations were recorded is calibrated here, at
    ``ZTML_SQUEEZE_FPR``, as it always was.

    Raises:
        ModelRefusedError: the calibration differs from the recorded one or is missing.
    """
    x_val, _ = served.validation()
    x_unit = served.to_unit(x_val)
    contract = served.contract
    try:
        if info.calibration is None:
            if not served.builtin:
                raise _refused(
                    f"model {info.digest} was registered without a detector calibration; "
                    "register it again with `ztml model register`"
                )
            calibration = calibrate_detector(
                served.unit_network, contract, x_unit, fpr=config.squeeze_fpr
            )
        else:
            calibration = Calibration.from_document(info.calibration)
            verify_calibration(served.unit_network, contract, x_unit, calibration)
        return build_detector(served.unit_network, contract, calibration)
    except CalibrationError as err:
        raise _refused(
            f"the detector calibration of {info.digest} does not match its registration: {err}"
        ) from None


def _extraction_detector(config: AppConfig, served: ServedModel) -> ExtractionDetector:
    """The extraction monitor with thresholds benign traffic of this model's data never crosses.

    The digits model keeps the defaults calibrated on its data; a package's thresholds
    come from benign query streams drawn from its validation data (deterministic), since
    tabular data gives much lower benign Shapiro-Wilk statistics than images.
    """
    if served.builtin:
        return ExtractionDetector(config.monitor_store)
    from service.monitor.calibration import calibrate_thresholds

    thresholds = calibrate_thresholds(served.to_unit(served.validation()[0]))
    return ExtractionDetector(
        config.monitor_store, delta=thresholds.delta, min_cv=thresholds.min_cv
    )


def _opa_tls_context(config: AppConfig) -> ssl.SSLContext | None:
    if config.opa_tls_files is None:
        return None
    ca, cert, key = config.opa_tls_files
    return OpaTls(ca_file=ca, cert_file=cert, key_file=key).context()


def build_layers(config: AppConfig, info: VerifiedModel) -> Layers:
    """Build every layer for this worker.

    Raises:
        ModelRefusedError: the verified artifact changed or does not load.
        Exception: a component cannot start (its own error says why).
    """
    served = load_verified_model(info)
    detector = _detector(config, info, served)
    if served.builtin:
        from service.model.data import load_splits

        reference = np.asarray(load_splits().x_train)
    else:
        reference = served.to_unit(served.validation()[0])
    config.monitor_db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Layers(
        config=config,
        model_info=info,
        verifier=JWTVerifier(IssuerTrust.load(config.issuers_path)),
        rate_limiter=RateLimiter(config.monitor_store),
        flood=FloodDetector(
            config.monitor_store,
            subject_threshold=config.flood_subject_per_minute,
            global_threshold=config.flood_global_per_minute,
        ),
        extraction=_extraction_detector(config, served),
        authorizer=OpaAuthorizer(
            config.opa_url,
            timeout_seconds=config.opa_timeout_seconds,
            ssl_context=_opa_tls_context(config),
        ),
        model=served.unit_network,
        squeezer=detector,
        drift=DriftMonitor(reference, window=config.drift_window, alpha=config.drift_alpha),
        review=ReviewQueue(config.review_store),
        audit=open_audit_log(config.audit_dir, mirror_stdout=config.audit_stdout),
        drift_lock=threading.Lock(),
        served=served,
    )
