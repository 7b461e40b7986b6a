"""Errors raised while creating, loading or trusting keys."""


class KeyError_(Exception):
    """Base error for key handling."""


class KeyPermissionError(KeyError_):
    """A private key or its directory is readable by others; it is refused."""


class KeyFileError(KeyError_):
    """A key file is missing, unreadable or not an Ed25519 key."""


class UntrustedKeyError(KeyError_):
    """A signature was made by a key that is not in the trust store."""


class SignatureError(KeyError_):
    """A signature does not verify."""
