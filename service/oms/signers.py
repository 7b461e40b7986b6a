"""Who signs models in OMS format: ztml's own signing key and the trusted signer keys.

OMS bundles (OpenSSF model signing, ``model-signing``) are signed with elliptic-curve
keys (NIST P-256, P-384 or P-521), not with the Ed25519 keys of the ledger, so they are
kept apart from them:

- ztml's signing key is ``$ZTML_HOME/keys/oms-signer.key`` (PKCS#8 PEM, mode 0600 in the
  0700 key directory, like every private key; ``ztml keys init`` and ``ztml up`` create
  it);
- the trusted signers are the ``*.pub`` PEM public keys in ``oms_signers/`` inside the
  ledger trust directory (``$ZTML_TRUST_DIR``, by default ``$ZTML_HOME/keys``), or in the
  directory ``$ZTML_OMS_SIGNERS_DIR`` names. ztml's own public key is written there as
  ``oms-signer.pub``; the operator adds the public key of anyone else whose models may be
  registered and served. An empty or missing directory trusts nobody.

A key is named by its hint, the hex SHA-256 of its PEM SubjectPublicKeyInfo text: the
identifier an OMS bundle records for the key that signed it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service.keys.errors import KeyError_
from service.keys.store import check_private_file, write_private_pem
from service.oms.errors import OmsKeyError, OmsTrustError
from service.toolchain.paths import ztml_home

SIGNING_KEY_NAME = "oms-signer"
SIGNERS_DIR_NAME = "oms_signers"
SIGNERS_DIR_ENV = "ZTML_OMS_SIGNERS_DIR"
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")


def key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """Return the hint an OMS bundle names ``public_key`` by (hex SHA-256 of its PEM)."""
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def signers_dir(trust_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """Return the trusted OMS signers' directory.

    That is ``$ZTML_OMS_SIGNERS_DIR`` when set, else ``<trust_dir>/oms_signers``.
    """
    env = os.environ if env is None else env
    explicit = env.get(SIGNERS_DIR_ENV)
    return Path(explicit).expanduser() if explicit else Path(trust_dir) / SIGNERS_DIR_NAME


def default_signers_dir(env: Mapping[str, str] | None = None) -> Path:
    """Return this host's trusted OMS signers' directory (see :func:`signers_dir`).

    Its trust directory is ``$ZTML_TRUST_DIR``, else ``$ZTML_HOME/keys``.
    """
    env = os.environ if env is None else env
    trust_dir = Path(env["ZTML_TRUST_DIR"]).expanduser() if env.get("ZTML_TRUST_DIR") else None
    return signers_dir(trust_dir or ztml_home() / "keys", env)


def default_signing_key(keys_dir: Path) -> Path:
    """Return where ztml's OMS signing key lives in a key directory."""
    return Path(keys_dir) / f"{SIGNING_KEY_NAME}.key"


def _supported(public_key: object, where: Path) -> ec.EllipticCurvePublicKey:
    if (
        not isinstance(public_key, ec.EllipticCurvePublicKey)
        or public_key.curve.name not in SUPPORTED_CURVES
    ):
        raise OmsTrustError(
            f"{where} is not an elliptic-curve public key on P-256, P-384 or P-521, the keys "
            "OMS bundles are signed with; replace it with the signer's PEM public key."
        )
    return public_key


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load an OMS signing key, refusing loose permissions and unsupported curves.

    Raises:
        OmsKeyError: the key is missing, readable by others, or not an EC key on a
            supported curve.
    """
    path = Path(path)
    try:
        check_private_file(path)
    except KeyError_ as err:
        raise OmsKeyError(f"OMS signing key unusable: {err}") from None
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise OmsKeyError(
            f"Cannot read the OMS signing key {path}: not an unencrypted PEM private key "
            f"({type(err).__name__})."
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in SUPPORTED_CURVES:
        raise OmsKeyError(
            f"The OMS signing key {path} is not an elliptic-curve key on P-256, P-384 or "
            "P-521; create one with `ztml keys init`."
        )
    return key


@dataclass(frozen=True)
class SigningKeyInfo:
    """ztml's OMS signing key on disk and its trusted public half."""

    private_path: Path
    public_path: Path
    hint: str
    created: bool


def init_signing_key(keys_dir: Path, *, trust_dir: Path | None = None) -> SigningKeyInfo:
    """Create ztml's OMS signing key when missing and trust its public key.

    The private key is written 0600 through ``O_EXCL`` (never overwritten); its public key
    is (re)written as ``oms-signer.pub`` in the trusted signers' directory of
    ``trust_dir`` (default: ``keys_dir``).

    Raises:
        OmsKeyError: an existing key is unusable (loose permissions, wrong type).
    """
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    private_path = default_signing_key(keys_dir)
    created = False
    if private_path.exists():
        private = load_signing_key(private_path)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        write_private_pem(private_path, private)
        created = True
    public = private.public_key()
    directory = signers_dir(trust_dir or keys_dir, env={})
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    public_path = directory / f"{SIGNING_KEY_NAME}.pub"
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if not public_path.exists() or public_path.read_bytes() != pem:
        public_path.write_bytes(pem)
        os.chmod(public_path, 0o644)
    return SigningKeyInfo(private_path, public_path, key_hint(public), created)


@dataclass(frozen=True)
class TrustedSigners:
    """The public keys trusted to sign OMS bundles, by hint.

    Attributes:
        directory: Where the keys were read from (named in refusals).
        keys: Key hint -> the trusted ``*.pub`` file.
    """

    directory: Path
    keys: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def from_directory(cls, directory: Path) -> TrustedSigners:
        """Trust every ``*.pub`` of ``directory``, which must hold at least one.

        Raises:
            OmsTrustError: the directory is missing or empty, or a key file is not an EC
                public key on a supported curve.
        """
        directory = Path(directory)
        files = sorted(directory.glob("*.pub")) if directory.is_dir() else []
        if not files:
            raise OmsTrustError(
                f"No trusted OMS signer keys (*.pub) in {directory}: nothing can verify a "
                "model's signature. Run `ztml keys init` to trust ztml's own signing key, or "
                "add the PEM public key of the model's signer there."
            )
        keys: dict[str, Path] = {}
        for path in files:
            try:
                public = serialization.load_pem_public_key(path.read_bytes())
            except (OSError, ValueError, TypeError) as err:
                raise OmsTrustError(
                    f"Cannot read the trusted OMS signer key {path} ({type(err).__name__}); "
                    "it must be a PEM public key."
                ) from None
            keys[key_hint(_supported(public, path))] = path
        return cls(directory, keys)
