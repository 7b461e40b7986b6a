"""Trusted token issuers: which keys may sign tokens, for which issuer and audience.

The trust file is ``$ZTML_HOME/issuers.json`` (mode ``0600``)::

    {"audience": "ztml-model-api",
     "issuers": [{"iss": "ztml-local",
                  "keys": [{"kid": "ed25519:...", "alg": "EdDSA",
                            "public_key_pem": "-----BEGIN PUBLIC KEY-----..."}]}]}

Each key id names exactly one key, bound to one issuer and one algorithm: a token is
verified only with the algorithm its key was configured for, never with the one the token
claims, which is what defeats algorithm-confusion attacks. Only ``EdDSA`` (Ed25519) and
``ES256`` (ECDSA P-256) keys are accepted.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service.authn.errors import AuthenticationError, IssuerConfigError
from service.keys.store import key_id

Algorithm = Literal["EdDSA", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("EdDSA", "ES256")
PublicKey = Ed25519PublicKey | EllipticCurvePublicKey

DEFAULT_AUDIENCE = "ztml-model-api"
LOCAL_ISSUER = "ztml-local"
ISSUERS_FILE = "issuers.json"


@dataclass(frozen=True)
class TrustedKey:
    """One public key trusted to sign tokens for one issuer with one algorithm."""

    kid: str
    alg: Algorithm
    iss: str
    public_key: PublicKey = field(repr=False)

    @property
    def public_key_pem(self) -> str:
        """The key as PEM (SubjectPublicKeyInfo) text."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


def _parse_key(entry: object, iss: str, where: str) -> TrustedKey:
    if not isinstance(entry, dict):
        raise IssuerConfigError(f"{where} must be an object with kid, alg and public_key_pem.")
    kid, alg, pem = entry.get("kid"), entry.get("alg"), entry.get("public_key_pem")
    if not isinstance(kid, str) or not kid:
        raise IssuerConfigError(f"{where}.kid must be a non-empty string.")
    if alg not in ALGORITHMS:
        raise IssuerConfigError(
            f"{where}.alg is {alg!r}; only {', '.join(ALGORITHMS)} keys are accepted."
        )
    if not isinstance(pem, str):
        raise IssuerConfigError(f"{where}.public_key_pem must be PEM text.")
    try:
        public = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise IssuerConfigError(f"{where}.public_key_pem is not a PEM public key.") from None
    if alg == "EdDSA":
        if not isinstance(public, Ed25519PublicKey):
            raise IssuerConfigError(f"{where} has alg EdDSA but its key is not Ed25519.")
        if kid.startswith("ed25519:") and kid != key_id(public):
            raise IssuerConfigError(
                f"{where}.kid {kid} does not match its key (expected {key_id(public)})."
            )
    elif not (isinstance(public, EllipticCurvePublicKey) and isinstance(public.curve, SECP256R1)):
        raise IssuerConfigError(f"{where} has alg ES256 but its key is not ECDSA P-256.")
    return TrustedKey(kid=kid, alg=cast(Algorithm, alg), iss=iss, public_key=public)


@dataclass(frozen=True)
class IssuerTrust:
    """The audience this service accepts and the issuer keys it trusts, by key id."""

    audience: str
    keys: Mapping[str, TrustedKey]

    @classmethod
    def from_dict(cls, data: object) -> IssuerTrust:
        """Build the trust from the parsed ``issuers.json`` document.

        Raises:
            IssuerConfigError: a field is missing or has the wrong type, a key is not an
                EdDSA/ES256 public key, or a key id appears twice.
        """
        if not isinstance(data, dict):
            raise IssuerConfigError("issuers.json must hold a JSON object.")
        audience = data.get("audience")
        if not isinstance(audience, str) or not audience:
            raise IssuerConfigError('issuers.json needs "audience": a non-empty string.')
        issuers = data.get("issuers")
        if not isinstance(issuers, list):
            raise IssuerConfigError('issuers.json needs "issuers": a list of issuers.')
        keys: dict[str, TrustedKey] = {}
        for i, issuer in enumerate(issuers):
            where = f"issuers[{i}]"
            if not isinstance(issuer, dict):
                raise IssuerConfigError(f"{where} must be an object with iss and keys.")
            iss = issuer.get("iss")
            if not isinstance(iss, str) or not iss:
                raise IssuerConfigError(f"{where}.iss must be a non-empty string.")
            entries = issuer.get("keys")
            if not isinstance(entries, list):
                raise IssuerConfigError(f"{where}.keys must be a list.")
            for j, entry in enumerate(entries):
                key = _parse_key(entry, iss, f"{where}.keys[{j}]")
                if key.kid in keys:
                    raise IssuerConfigError(
                        f"Key id {key.kid} appears twice in issuers.json; key ids must be "
                        "unique across issuers."
                    )
                keys[key.kid] = key
        return cls(audience=audience, keys=dict(keys))

    @classmethod
    def load(cls, path: Path) -> IssuerTrust:
        """Read and validate a trust file.

        Raises:
            IssuerConfigError: the file is missing, not JSON or not a valid trust document.
        """
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise IssuerConfigError(
                f"Issuer trust file {path} does not exist. Create it with "
                "`ztml token issue` (it writes the local issuer) or write it by hand."
            ) from None
        except OSError as err:
            raise IssuerConfigError(f"Cannot read {path}: {err.strerror}.") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise IssuerConfigError(f"{path} is not valid JSON (line {err.lineno}).") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``issuers.json`` document for this trust."""
        by_issuer: dict[str, list[dict[str, str]]] = {}
        for key in self.keys.values():
            by_issuer.setdefault(key.iss, []).append(
                {"kid": key.kid, "alg": key.alg, "public_key_pem": key.public_key_pem}
            )
        return {
            "audience": self.audience,
            "issuers": [{"iss": iss, "keys": keys} for iss, keys in by_issuer.items()],
        }

    def save(self, path: Path) -> None:
        """Write the trust file atomically with mode ``0600``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".issuers-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.to_dict(), handle, indent=2)
                handle.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def with_key(self, key: TrustedKey) -> IssuerTrust:
        """Return a copy that also trusts ``key`` (replacing a key with the same id)."""
        keys = dict(self.keys)
        keys[key.kid] = key
        return IssuerTrust(audience=self.audience, keys=keys)

    def key(self, kid: str) -> TrustedKey:
        """Return the trusted key ``kid``.

        Raises:
            AuthenticationError: no trusted key has this id.
        """
        found = self.keys.get(kid)
        if found is None:
            raise AuthenticationError("unknown key id")
        return found
