"""Verify the bearer JWT every request carries.

A token is accepted only when all of these hold:

* the ``Authorization`` header is exactly ``Bearer <token>`` and the token is at most
  8 KiB of base64url segments;
* its header and its claims are JSON objects in which no member name appears twice, at
  any depth. RFC 7515 lets a parser keep the last of duplicate members; a proxy or a log
  pipeline that keeps the first would then read another ``alg``, ``kid`` or ``sub`` than
  the service, so such a token is refused outright;
* its header names a key id (``kid``) that :class:`~service.authn.trust.IssuerTrust`
  trusts, and its ``alg`` is the algorithm configured for that key (EdDSA or ES256). The
  verification algorithm comes from the trusted key, never from the token, so ``none``,
  HMAC tokens keyed with the public key and RSA tokens are all refused;
* PyJWT verifies the signature, the audience and the issuer the key is bound to, and
  requires them plus ``exp``, ``nbf``, ``iat`` and ``sub``;
* ``aud`` is the service's audience, as a string or as a list holding only that string:
  a token that also names another audience could be replayed by that other service, so
  it is refused;
* the time claims are numbers and, with ``now`` the verifier's clock and a leeway of
  :data:`LEEWAY_SECONDS` (30 s) for clock skew, ``now < exp + leeway``,
  ``now >= nbf - leeway`` and ``now >= iat - leeway``: the token is valid over
  ``[nbf - leeway, exp + leeway)``, the RFC 7519 interval widened by the leeway on each
  side;
* the custom claims have the right types: ``roles`` and ``scopes`` lists of strings,
  ``tenant`` a non-empty string.

Anything else raises :class:`~service.authn.errors.AuthenticationError` with a short reason
that never echoes the token.
"""

from __future__ import annotations

import binascii
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.utils import base64url_decode

from service.authn.errors import AuthenticationError
from service.authn.trust import ALGORITHMS, IssuerTrust

MAX_TOKEN_BYTES = 8 * 1024
#: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds.
LEEWAY_SECONDS = 30
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


class _DuplicateMemberError(ValueError):
    """A JSON object of the token names one member twice."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of :func:`json.loads` that refuses a repeated member name."""
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _DuplicateMemberError
    return members


def _segment_json(segment: str, what: str) -> dict[str, Any]:
    """Decode one base64url segment of the token as a JSON object with unique members.

    Raises:
        AuthenticationError: the segment is not base64url JSON of an object, or one of its
            objects (at any depth) names a member twice.
    """
    try:
        raw = base64url_decode(segment)
        value = json.loads(raw, object_pairs_hook=_unique_members)
    except _DuplicateMemberError:
        raise AuthenticationError(f"duplicate member in token {what}") from None
    except (binascii.Error, ValueError, RecursionError):
        raise AuthenticationError("malformed token") from None
    if not isinstance(value, dict):
        raise AuthenticationError("malformed token")
    return value


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
        clock: Returns the current Unix time (default :func:`time.time`).
    """

    def __init__(
        self,
        trust: IssuerTrust,
        *,
        leeway_seconds: float = LEEWAY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not math.isfinite(leeway_seconds) or leeway_seconds < 0:
            raise ValueError(f"leeway_seconds must be a finite number >= 0, not {leeway_seconds}")
        self.trust = trust
        self.leeway_seconds = leeway_seconds
        self.clock = clock

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
        head, body, _ = token.split(".")
        header = _segment_json(head, "header")
        _segment_json(body, "claims")  # refuses duplicates PyJWT would silently resolve
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
                options={
                    "require": REQUIRED_CLAIMS,
                    "verify_signature": True,
                    # Checked below against self.clock, with exact boundaries.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.MissingRequiredClaimError as err:
            raise AuthenticationError(f"missing claim {err.claim}") from None
        except jwt.PyJWTError as err:
            raise AuthenticationError(_reason(err)) from None
        except (TypeError, ValueError, OverflowError):
            raise AuthenticationError("invalid token") from None
        self._check_audience(payload["aud"])
        self._check_times(payload)
        return _claims(payload)

    def _check_audience(self, aud: object) -> None:
        """Accept ``aud`` only as the service's audience, alone (a string or a 1-list)."""
        audience = self.trust.audience
        if aud != audience and aud != [audience]:
            raise AuthenticationError("wrong audience")

    def _check_times(self, payload: dict[str, Any]) -> None:
        """Check ``exp``, ``nbf`` and ``iat`` against the clock, with the leeway."""
        exp, nbf, iat = (_time(payload, name) for name in ("exp", "nbf", "iat"))
        now = self.clock()
        if now >= exp + self.leeway_seconds:
            raise AuthenticationError("token expired")
        if now < nbf - self.leeway_seconds or now < iat - self.leeway_seconds:
            raise AuthenticationError("token not yet valid")


def _reason(err: jwt.PyJWTError) -> str:
    for kind, reason in _REASONS:
        if isinstance(err, kind):
            return reason
    return "invalid token"


def _time(payload: dict[str, Any], name: str) -> float:
    """Return a NumericDate claim, refusing anything but a finite JSON number."""
    value = payload.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise AuthenticationError(f"claim {name} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise AuthenticationError(f"claim {name} must be a number") from None
    if not math.isfinite(number):
        raise AuthenticationError(f"claim {name} must be a number")
    return number


def _claims(payload: dict[str, Any]) -> Claims:
    exp = _time(payload, "exp")
    return Claims(
        sub=_string(payload, "sub"),
        roles=_string_list(payload, "roles", required=True),
        tenant=_string(payload, "tenant"),
        scopes=_string_list(payload, "scopes", required=False),
        iss=_string(payload, "iss"),
        jti=_string(payload, "jti") if "jti" in payload else None,
        exp=int(exp),
    )
