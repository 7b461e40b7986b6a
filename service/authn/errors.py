"""Errors raised while configuring issuers, issuing tokens and authenticating requests."""

from __future__ import annotations


class AuthnError(Exception):
    """Base error for authentication."""


class AuthenticationError(AuthnError):
    """A request's credentials were rejected.

    The message is a short, stable reason (``"token expired"``, ``"unknown key id"``) that
    is safe to return to the client: it never contains the token or any part of it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IssuerConfigError(AuthnError):
    """The trusted-issuer file (``issuers.json``) is missing, malformed or inconsistent."""


class TokenIssueError(AuthnError):
    """A token cannot be issued with the given claims, lifetime or key."""


class TLSSetupError(AuthnError):
    """The development certificate authority or its certificates cannot be created or read."""
