"""OMS model signatures (OpenSSF model signing): sign models, verify their bundles."""

from service.oms.bundle import (
    BUNDLE_NAME,
    OmsBundle,
    VerifiedBundle,
    bundle_path,
    parse_bundle,
    sign_model,
    verify_model_bundle,
)
from service.oms.errors import (
    OmsBundleError,
    OmsError,
    OmsKeyError,
    OmsModelError,
    OmsTrustError,
    OmsUntrustedSignerError,
    OmsVerificationError,
)
from service.oms.signers import (
    TrustedSigners,
    default_signers_dir,
    default_signing_key,
    init_signing_key,
    key_hint,
    signers_dir,
)

__all__ = [
    "BUNDLE_NAME",
    "OmsBundle",
    "OmsBundleError",
    "OmsError",
    "OmsKeyError",
    "OmsModelError",
    "OmsTrustError",
    "OmsUntrustedSignerError",
    "OmsVerificationError",
    "TrustedSigners",
    "VerifiedBundle",
    "bundle_path",
    "default_signers_dir",
    "default_signing_key",
    "init_signing_key",
    "key_hint",
    "parse_bundle",
    "sign_model",
    "signers_dir",
    "verify_model_bundle",
]
