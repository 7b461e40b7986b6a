"""Errors of the authorization layer."""


class AuthzError(Exception):
    """Base class of authorization errors."""


class PolicyUnavailableError(AuthzError):
    """OPA could not give a usable decision (unreachable, timeout, undefined, malformed).

    The service answers 503 and denies: an unavailable policy never allows.
    """


class ProvenanceGateError(AuthzError):
    """The provenance policy could not be evaluated (OPA missing or its answer unusable)."""
