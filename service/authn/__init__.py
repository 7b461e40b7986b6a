"""Request authentication: bearer JWTs (EdDSA/ES256), the local CA, callers' client certificates."""

from service.authn.errors import (
    AuthenticationError,
    AuthnError,
    IssuerConfigError,
    TLSSetupError,
    TokenIssueError,
)
from service.authn.issuer import ensure_local_issuer, issue_token
from service.authn.trust import DEFAULT_AUDIENCE, LOCAL_ISSUER, IssuerTrust, TrustedKey
from service.authn.verifier import Claims, JWTVerifier

__all__ = [
    "DEFAULT_AUDIENCE",
    "LOCAL_ISSUER",
    "AuthenticationError",
    "AuthnError",
    "Claims",
    "IssuerConfigError",
    "IssuerTrust",
    "JWTVerifier",
    "TLSSetupError",
    "TokenIssueError",
    "TrustedKey",
    "ensure_local_issuer",
    "issue_token",
]
