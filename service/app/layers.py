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
from service.app.gate import VerifiedModel, hash_model
from service.audit import AuditLog, open_audit_log
from service.authn import IssuerTrust, JWTVerifier
from service.authz import OpaAuthorizer
from service.authz.tls import OpaTls
from service.model.artifact import load_model
from service.model.data import load_splits
from service.model.errors import ModelError
from service.monitor import DriftMonitor, ExtractionDetector, FloodDetector, RateLimiter
from service.review import ReviewQueue
from service.sanitizer import FeatureSqueezer, calibrate_threshold

if TYPE_CHECKING:
    from torch import nn

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
    squeezer: FeatureSqueezer
    drift: DriftMonitor
    review: ReviewQueue
    audit: AuditLog
    drift_lock: threading.Lock

    def close(self) -> None:
        """Flush and close what holds files (the audit chain gets its final checkpoint)."""
        try:
            self.audit.close()
        except Exception:  # shutting down: log, never raise
            _log.warning("closing the audit log failed", exc_info=True)


def load_verified_model(info: VerifiedModel) -> nn.Module:
    """Load the artifact the gate verified, checking it is still the same file.

    Raises:
        ModelRefusedError: the file changed since it was verified or does not load.
    """
    import torch  # heavy: imported when a worker loads its model, not with this module

    digest, _ = hash_model(info.path)
    if digest != info.digest:
        reason = f"artifact {info.path} changed after verification ({digest} != {info.digest})"
        raise ModelRefusedError(reason, (reason,))
    try:
        model = load_model(info.path)
    except ModelError as err:
        raise ModelRefusedError(f"artifact {info.path} does not load: {err}", (str(err),)) from None
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    torch.set_num_threads(1)
    return model


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
    model = load_verified_model(info)
    splits = load_splits()
    threshold = calibrate_threshold(model, splits.x_val, fpr=config.squeeze_fpr)
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
        extraction=ExtractionDetector(config.monitor_store),
        authorizer=OpaAuthorizer(
            config.opa_url,
            timeout_seconds=config.opa_timeout_seconds,
            ssl_context=_opa_tls_context(config),
        ),
        model=model,
        squeezer=FeatureSqueezer(model, threshold=threshold),
        drift=DriftMonitor(
            np.asarray(splits.x_train), window=config.drift_window, alpha=config.drift_alpha
        ),
        review=ReviewQueue(config.review_store),
        audit=open_audit_log(config.audit_dir, mirror_stdout=config.audit_stdout),
        drift_lock=threading.Lock(),
    )
