"""Errors of OMS model signatures: one base type, one subclass per failure area."""


class OmsError(Exception):
    """Base error of OMS signing and verification; the message names the fix."""


class OmsKeyError(OmsError):
    """The signing key is missing, loosely protected or not a supported elliptic-curve key."""


class OmsTrustError(OmsError):
    """No OMS signer key is trusted, or a trusted key file is unusable."""


class OmsBundleError(OmsError):
    """The bundle is missing, unreadable or not an OMS bundle ztml can check."""


class OmsUntrustedSignerError(OmsError):
    """The bundle was signed by a key that is not among the trusted OMS signers."""


class OmsVerificationError(OmsError):
    """The signature does not verify, or the model's files differ from what was signed."""


class OmsModelError(OmsError):
    """The model to sign or verify is missing or cannot be read."""
