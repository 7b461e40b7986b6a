"""Verify the bearer JWT every request carries.

A token is accepted only when all of these hold:

* the ``Authorization`` header is exactly ``Bearer <token>`` and the token is at most
  8 KiB of base64url segments;
* its header names a key id (``kid``) that :class:`~service.authn.trust.IssuerTrust`
  trusts, and its ``alg`` is the algorithm configured for that key (EdDSA or ES256). The
  verification algorithm comes from the trusted key, never from the token, so ``none``,
  HMAC tokens keyed with the public key and RSA tokens are all refused;
* PyJWT verifies the signature, ``exp``, ``nbf``, ``iat`` (with a small leeway), the
  audience and the issuer the key is bound to, and requires all of them plus ``sub``;
* the custom claims have the right types: ``roles`` and ``scopes`` lists of strings,
  ``tenant`` a non-empty string.

Anything else raises :class:`~service.authn.errors.AuthenticationError` with a short reason
that never echoes the token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jwt

from service.authn.errors import AuthenticationError
from service.authn.trust import ALGORITHMS, IssuerTrust

MAX_TOKEN_BYTES = 8 * 1024
MAX_CLAIM_ITEMS = 64
MAX_CLAIM_CHARS = 256
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub"]

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

# Most specific first: several PyJWT errors subclass others.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "unsupported algorithm"),
    (jwt.InvalidIssuedAtError, "invalid issued-at claim"),
    (jwt.DecodeError, "malformed token"),
)


@dataclass(frozen=True)
class Claims:
    """The verified identity a request acts as."""

    sub: str
    roles: tuple[str, ...]
    tenant: str
    scopes: tuple[str, ...]
    iss: str
    jti: str | None
    exp: int

    def subject(self) -> dict[str, Any]:
        """Return the ``subject`` object of the authorization policy input."""
        return {
            "sub": self.sub,
            "roles": list(self.roles),
            "tenant": self.tenant,
            "scopes": list(self.scopes),
        }


def extract_bearer(authorization_header: str | None) -> str:
    """Return the token of an ``Authorization: Bearer <token>`` header value.

    Raises:
        AuthenticationError: the header is absent, not of the Bearer form, too large or
            not three base64url segments.
    """
    if authorization_header is None or not authorization_header.strip():
        raise AuthenticationError("missing bearer token")
    if len(authorization_header) > MAX_TOKEN_BYTES + 16:
        raise AuthenticationError("token too large")
    scheme, sep, token = authorization_header.partition(" ")
    if not sep or scheme.lower() != "bearer":
        raise AuthenticationError("authorization header must be 'Bearer <token>'")
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise AuthenticationError("token too large")
    if not _TOKEN_RE.fullmatch(token):
        raise AuthenticationError("malformed token")
    return token


def _string(payload: dict[str, Any], name: str) -> str:
    if name not in payload:
        raise AuthenticationError(f"missing claim {name}")
    value = payload[name]
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_CHARS:
        raise AuthenticationError(f"claim {name} must be a non-empty string")
    return value


def _string_list(payload: dict[str, Any], name: str, *, required: bool) -> tuple[str, ...]:
    if name not in payload:
        if required:
            raise AuthenticationError(f"missing claim {name}")
        return ()
    value = payload[name]
    if (
        not isinstance(value, list)
        or len(value) > MAX_CLAIM_ITEMS
        or not all(isinstance(v, str) and v and len(v) <= MAX_CLAIM_CHARS for v in value)
    ):
        raise AuthenticationError(f"claim {name} must be a list of strings")
    return tuple(value)


class JWTVerifier:
    """Verifies bearer tokens against the trusted issuers.

    Args:
        trust: The issuers, keys and audience to accept.
        leeway_seconds: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
    """

    def __init__(self, trust: IssuerTrust, *, leeway_seconds: float = 30) -> None:
        self.trust = trust
        self.leeway_seconds = leeway_seconds

    def verify(self, authorization_header: str | None) -> Claims:
        """Verify the token in an ``Authorization`` header value and return its claims.

        Raises:
            AuthenticationError: the token is absent, malformed, oversized, signed with an
                unknown key or algorithm, badly signed, expired, not yet valid, for another
                audience or issuer, or lacks a required claim.
        """
        token = extract_bearer(authorization_header)
        return self.verify_token(token)

    def verify_token(self, token: str) -> Claims:
        """Verify a bare token (no ``Bearer`` prefix); see :meth:`verify`."""
        if len(token.encode()) > MAX_TOKEN_BYTES:
            raise AuthenticationError("token too large")
        if not _TOKEN_RE.fullmatch(token):
            raise AuthenticationError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("malformed token") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthenticationError("unsupported algorithm")
        if "crit" in header:
            raise AuthenticationError("unsupported critical header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("missing key id")
        key = self.trust.key(kid)
        if alg != key.alg:
            raise AuthenticationError("algorithm does not match key")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key=key.public_key,
                algorithms=[key.alg],
                audience=self.trust.audience,
                issuer=key.iss,
                leeway=self.leeway_seconds,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.MissingRequiredClaimError as err:
            raise AuthenticationError(f"missing claim {err.claim}") from None
        except jwt.PyJWTError as err:
            raise AuthenticationError(_reason(err)) from None
        except (TypeError, ValueError, OverflowError):
            raise AuthenticationError("invalid token") from None
        return _claims(payload)


def _reason(err: jwt.PyJWTError) -> str:
    for kind, reason in _REASONS:
        if isinstance(err, kind):
            return reason
    return "invalid token"


def _claims(payload: dict[str, Any]) -> Claims:
    exp = payload.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise AuthenticationError("claim exp must be a number")
    return Claims(
        sub=_string(payload, "sub"),
        roles=_string_list(payload, "roles", required=True),
        tenant=_string(payload, "tenant"),
        scopes=_string_list(payload, "scopes", required=False),
        iss=_string(payload, "iss"),
        jti=_string(payload, "jti") if "jti" in payload else None,
        exp=int(exp),
    )
