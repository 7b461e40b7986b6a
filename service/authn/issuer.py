"""Issue EdDSA tokens and set up the local issuer that ``ztml token issue`` signs for.

The local issuer (``iss`` ``ztml-local``, audience ``ztml-model-api``) signs with the
``issuer`` key of the key store, ``$ZTML_HOME/keys/issuer.key``; its public key is
published to the service in ``$ZTML_HOME/issuers.json`` under its key id.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import jwt

from service.authn.errors import IssuerConfigError, TokenIssueError
from service.authn.trust import (
    DEFAULT_AUDIENCE,
    ISSUERS_FILE,
    LOCAL_ISSUER,
    IssuerTrust,
    TrustedKey,
)
from service.keys.store import Signer, init_keys

MAX_TTL_SECONDS = 7 * 24 * 3600
ISSUER_KEY_NAME = "issuer"


def _names(values: Sequence[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise TokenIssueError(f"{what} must be a list of names, not one string.")
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise TokenIssueError(f"{what} must be non-empty names; got {list(values)!r}.")
    return [v.strip() for v in values]


def issue_token(
    signer: Signer,
    *,
    issuer: str,
    audience: str,
    sub: str,
    roles: Sequence[str],
    tenant: str,
    scopes: Sequence[str],
    ttl_seconds: int,
    now: float | None = None,
) -> str:
    """Sign a JWT for ``sub`` with EdDSA; its ``kid`` header is ``signer.key_id``.

    Args:
        signer: The issuer's Ed25519 signer.
        issuer: The ``iss`` claim (``ztml-local`` for the local issuer).
        audience: The ``aud`` claim (``ztml-model-api``).
        sub: The subject the token identifies.
        roles: Role names (``predictor``, ``analyst``, ...).
        tenant: The subject's tenant.
        scopes: Actions the token may be used for (``predict``, ``explain``, ...).
        ttl_seconds: Lifetime, 1 second to 7 days.
        now: Issue time as a Unix timestamp (default: the current time).

    Returns:
        The compact JWT.

    Raises:
        TokenIssueError: a claim is empty or the lifetime is out of range.
    """
    if not sub.strip() or not tenant.strip() or not issuer or not audience:
        raise TokenIssueError("sub, tenant, issuer and audience must be non-empty.")
    if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise TokenIssueError(
            f"ttl_seconds is {ttl_seconds}; it must be between 1 and {MAX_TTL_SECONDS}."
        )
    issued = int(time.time() if now is None else now)
    payload = {
        "iss": issuer,
        "aud": audience,
        "sub": sub.strip(),
        "roles": _names(roles, "roles"),
        "tenant": tenant.strip(),
        "scopes": _names(scopes, "scopes"),
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(
        payload,
        signer.private_key,
        algorithm="EdDSA",
        headers={"kid": signer.key_id, "typ": "JWT"},
    )


def issuers_path(home: Path) -> Path:
    """Return the path of the trust file in a ztml home directory."""
    return Path(home) / ISSUERS_FILE


def local_signer(home: Path) -> Signer:
    """Load (creating it if missing) the local issuer's signer from ``home/keys``.

    Raises:
        service.keys.errors.KeyError_: the key exists but has loose permissions or is
            unreadable.
    """
    directory = Path(home) / "keys"
    init_keys(directory, [ISSUER_KEY_NAME])
    return Signer.from_file(directory / f"{ISSUER_KEY_NAME}.key", identity=LOCAL_ISSUER)


def issue_local_token(
    home: Path,
    *,
    sub: str,
    roles: Sequence[str],
    tenant: str,
    scopes: Sequence[str],
    ttl_seconds: int,
    signer: Signer | None = None,
    now: float | None = None,
) -> str:
    """Issue a token from the local issuer of ``home`` (``ztml-local``, default audience).

    Pass ``signer`` (from :func:`local_signer`) when issuing many tokens, to load the key
    once.
    """
    return issue_token(
        signer or local_signer(home),
        issuer=LOCAL_ISSUER,
        audience=DEFAULT_AUDIENCE,
        sub=sub,
        roles=list(roles),
        tenant=tenant,
        scopes=list(scopes),
        ttl_seconds=ttl_seconds,
        now=now,
    )


def ensure_local_issuer(home: Path) -> IssuerTrust:
    """Make ``home/issuers.json`` trust the local issuer key and return the trust.

    Creates ``home/keys/issuer.key`` if it does not exist. An existing trust file keeps
    its other issuers and keys; the local key is added under ``iss`` ``ztml-local`` if it
    is not trusted yet. The file is written with mode ``0600``.

    Raises:
        IssuerConfigError: the existing trust file is invalid.
        service.keys.errors.KeyError_: the issuer key cannot be loaded.
    """
    signer = local_signer(home)
    path = issuers_path(home)
    trust = (
        IssuerTrust.load(path) if path.exists() else IssuerTrust(audience=DEFAULT_AUDIENCE, keys={})
    )
    existing = trust.keys.get(signer.key_id)
    if existing is not None:
        if existing.iss != LOCAL_ISSUER or existing.alg != "EdDSA":
            raise IssuerConfigError(
                f"{path} binds the local key {signer.key_id} to issuer {existing.iss!r} "
                f"({existing.alg}); it must be {LOCAL_ISSUER!r} (EdDSA). Fix or delete the entry."
            )
        return trust
    trust = trust.with_key(
        TrustedKey(kid=signer.key_id, alg="EdDSA", iss=LOCAL_ISSUER, public_key=signer.public_key)
    )
    trust.save(path)
    return trust
