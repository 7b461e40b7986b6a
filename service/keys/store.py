"""Create, load and trust Ed25519 keys.

Keys live in one directory (``$ZTML_HOME/keys`` by default) that must be ``0700``; each
private key is a PKCS#8 PEM file ``<name>.key`` with mode ``0600`` and its public key is
``<name>.pub``. A private key whose file or directory is readable by group or others is
refused, like ssh does. A key is named by its key id: ``ed25519:`` and the first 16 hex
digits of the SHA-256 of the raw public key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import socket
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from service.keys.errors import KeyFileError, KeyPermissionError, SignatureError, UntrustedKeyError
from service.toolchain.paths import ztml_home

STANDARD_KEYS = ("trainer", "approver", "audit", "issuer")


def default_identity(role: str) -> str:
    """Return the default signer identity of a role on this host, ``<role>@<hostname>``."""
    return f"{role}@{socket.gethostname()}"


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the key id of an Ed25519 public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def _check_private(path: Path) -> None:
    try:
        mode = path.stat().st_mode
        dir_mode = path.parent.stat().st_mode
    except FileNotFoundError as err:
        raise KeyFileError(
            f"Private key {path} does not exist. Create it with `ztml keys init`."
        ) from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyPermissionError(
            f"Private key {path} has mode {stat.S_IMODE(mode):04o}; it must be readable by its "
            f"owner only. Fix it with `chmod 600 {path}`."
        )
    if dir_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyPermissionError(
            f"Key directory {path.parent} has mode {stat.S_IMODE(dir_mode):04o}; it must be "
            f"0700. Fix it with `chmod 700 {path.parent}`."
        )


def check_private_file(path: Path) -> None:
    """Refuse a private key file that group or others can access, or whose directory they can.

    Used for private keys of any type (e.g. the OMS signing key of :mod:`service.oms`).

    Raises:
        KeyFileError: the file does not exist.
        KeyPermissionError: the file or its directory is accessible to group or others.
    """
    _check_private(Path(path))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key, refusing loose file or directory permissions.

    Raises:
        KeyPermissionError: the file or its directory is accessible to group or others.
        KeyFileError: the file is missing, unreadable or not an Ed25519 private key.
    """
    path = Path(path)
    _check_private(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise KeyFileError(
            f"Cannot read private key {path}: not a PEM Ed25519 key ({type(err).__name__})."
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"Private key {path} is not an Ed25519 key.")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM file.

    Raises:
        KeyFileError: the file is missing, unreadable or not an Ed25519 public key.
    """
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise KeyFileError(f"Public key {path} does not exist.") from None
    except (OSError, ValueError, TypeError) as err:
        raise KeyFileError(
            f"Cannot read public key {path}: not a PEM Ed25519 key ({type(err).__name__})."
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"Public key {path} is not an Ed25519 key.")
    return key


def public_pem(public_key: Ed25519PublicKey) -> str:
    """Return the PEM (SubjectPublicKeyInfo) text of a public key."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class KeyInfo:
    """A key pair on disk: its name, key id and whether this call created it."""

    name: str
    key_id: str
    private_path: Path
    public_path: Path
    created: bool


def write_private_pem(path: Path, private_key: PrivateKeyTypes) -> None:
    """Write a private key as an unencrypted PKCS#8 PEM file readable by its owner only.

    The file is created ``0600`` with ``O_EXCL``, so an existing file (or a link planted
    in its place) is never overwritten or followed.

    Raises:
        FileExistsError: ``path`` already exists.
    """
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _secure_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def init_keys(directory: Path, names: Sequence[str] = STANDARD_KEYS) -> list[KeyInfo]:
    """Create the named key pairs that do not exist yet; keep the ones that do.

    The directory is created (or tightened) to ``0700``; private keys are written
    ``0600`` through ``O_EXCL`` so an existing key is never overwritten.

    Raises:
        KeyPermissionError: an existing private key has loose permissions.
        KeyFileError: an existing key file is unreadable.
    """
    directory = Path(directory)
    _secure_dir(directory)
    infos = []
    for name in names:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise KeyFileError(f"Key name {name!r} may hold only letters, digits, '-' and '_'.")
        private_path = directory / f"{name}.key"
        public_path = directory / f"{name}.pub"
        created = False
        if private_path.exists():
            private = load_private_key(private_path)
        else:
            private = Ed25519PrivateKey.generate()
            write_private_pem(private_path, private)
            created = True
        public = private.public_key()
        if not public_path.exists() or created:
            public_path.write_text(public_pem(public))
            os.chmod(public_path, 0o644)
        infos.append(KeyInfo(name, key_id(public), private_path, public_path, created))
    return infos


@dataclass(frozen=True)
class Signer:
    """Signs bytes with an Ed25519 private key on behalf of a named identity.

    The public key and its ids are derived once (every ledger append names them).
    """

    identity: str
    private_key: Ed25519PrivateKey = field(repr=False)

    @functools.cached_property
    def key_id(self) -> str:
        """The key id of the signing key."""
        return key_id(self.public_key)

    @functools.cached_property
    def public_key(self) -> Ed25519PublicKey:
        """The public half of the signing key."""
        return self.private_key.public_key()

    @functools.cached_property
    def public_bytes(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def from_file(cls, path: Path, identity: str) -> Signer:
        """Load a signer from a private key file (permissions are checked)."""
        return cls(identity=identity, private_key=load_private_key(path))

    @classmethod
    def for_role(cls, role: str, *, key: Path | None = None, identity: str | None = None) -> Signer:
        """Load the signer of a standard role (``trainer``, ``approver``, ...).

        Args:
            role: The key name; the default key is ``$ZTML_HOME/keys/<role>.key``.
            key: Another private key file to sign with.
            identity: The signer identity (default ``<role>@<hostname>``).

        Raises:
            KeyPermissionError: the key or its directory is accessible to others.
            KeyFileError: the key is missing, unreadable or not an Ed25519 key.
        """
        path = key or ztml_home() / "keys" / f"{role}.key"
        return cls.from_file(path, identity or default_identity(role))

    def sign(self, data: bytes) -> bytes:
        """Return the Ed25519 signature of ``data``."""
        return self.private_key.sign(data)

    def sign_b64(self, data: bytes) -> str:
        """Return the base64 Ed25519 signature of ``data``."""
        return base64.b64encode(self.sign(data)).decode()


@dataclass
class TrustStore:
    """Public keys trusted to sign, by key id."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def from_public_keys(cls, keys: Iterable[Ed25519PublicKey]) -> TrustStore:
        """Trust exactly the given public keys."""
        return cls({key_id(k): k for k in keys})

    @classmethod
    def from_directory(cls, directory: Path) -> TrustStore:
        """Trust every ``*.pub`` key in a directory."""
        return cls.from_public_keys(
            load_public_key(p) for p in sorted(Path(directory).glob("*.pub"))
        )

    @classmethod
    def from_trust_directory(
        cls, directory: Path, *, needed: str = "the signers' public keys"
    ) -> TrustStore:
        """Trust the ``*.pub`` keys of a ``--trust`` directory, which must hold at least one.

        Args:
            directory: The directory of trusted public keys (usually ``$ZTML_HOME/keys``).
            needed: Which public keys the caller verifies with, named in the error.

        Raises:
            KeyFileError: the directory is missing or holds no ``*.pub`` key, or a key
                file in it is not an Ed25519 public key.
        """
        directory = Path(directory)
        if not directory.is_dir() or not any(directory.glob("*.pub")):
            raise KeyFileError(
                f"No trusted public keys (*.pub) in {directory}. Create keys with "
                f"`ztml keys init` or pass --trust DIR with {needed}."
            )
        return cls.from_directory(directory)

    def add(self, public_key: Ed25519PublicKey) -> str:
        """Trust one more key; return its key id."""
        kid = key_id(public_key)
        self.keys[kid] = public_key
        return kid

    def verify(self, kid: str, signature: bytes, data: bytes) -> None:
        """Check that ``signature`` over ``data`` was made by the trusted key ``kid``.

        Raises:
            UntrustedKeyError: ``kid`` is not trusted.
            SignatureError: the signature does not verify.
        """
        public = self.keys.get(kid)
        if public is None:
            raise UntrustedKeyError(f"key {kid} is not trusted")
        try:
            public.verify(signature, data)
        except InvalidSignature:
            raise SignatureError(f"signature by {kid} does not verify") from None

    def verify_b64(self, kid: str, signature_b64: str, data: bytes) -> None:
        """Like :meth:`verify`, with a base64 signature (malformed base64 fails)."""
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (ValueError, TypeError):
            raise SignatureError(f"signature by {kid} is not valid base64") from None
        self.verify(kid, signature, data)
