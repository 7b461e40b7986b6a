r"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 and cosignature/v1 signatures.

A signed note is a text ending in a newline, a blank line, and one or more signature
lines ``— <key name> <base64(4-byte key id || signature)>``. Two signature types are
supported, both Ed25519:

* ``0x01`` (signed-note): the signature is over the note text; a log signs its
  checkpoints with it, under the key name of the log's origin;
* ``0x04`` (c2sp.org/tlog-cosignature, ``cosignature/v1``): the signature is
  ``u64 timestamp || Ed25519("cosignature/v1\ntime <t>\n" || text)``; a witness adds
  it to a checkpoint it has checked.

The key id is ``SHA-256(name || "\n" || type || 32-byte public key)[:4]``. A verifier key
(vkey) is written ``<name>+<hex key id>+<base64(type || public key)>``. Verification
follows the spec: signatures by unknown keys are ignored, a signature by a known key
that fails rejects the whole note, and a note with no verified known signature is
rejected.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from service.chain.errors import NoteError

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
SIGNATURE_TYPES = (ED25519, COSIGNATURE_V1)
EM_DASH = "\u2014"
MAX_SIGNATURES = 64
_NAME_RE = re.compile(r"[^\s+\u2014]+")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def check_key_name(name: str) -> str:
    """Return ``name`` if it can name a note key (non-empty, no space or ``+``).

    Raises:
        NoteError: it cannot.
    """
    if not name or not _NAME_RE.fullmatch(name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@functools.lru_cache(maxsize=64)
def key_id(name: str, signature_type: int, public_key: bytes) -> int:
    """The 32-bit key id of a note key (signed-note's recommended derivation).

    Cached: a writer signs every checkpoint with the same few keys.
    """
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes a ``cosignature/v1`` signs: header, time line and the note text."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key id and the signature bytes after the id."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{EM_DASH} {self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Verifier:
    """A trusted note key: name, signature type and Ed25519 public key."""

    name: str
    signature_type: int
    public_key: Ed25519PublicKey

    def _identity(self) -> tuple[str, int, bytes]:
        return (self.name, self.signature_type, raw_public_key(self.public_key))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verifier) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    @property
    def key_id(self) -> int:
        """The key id signature lines by this key carry."""
        return key_id(self.name, self.signature_type, raw_public_key(self.public_key))

    def vkey(self) -> str:
        """The verifier key string ``<name>+<hex id>+<base64(type || key)>``."""
        material = bytes([self.signature_type]) + raw_public_key(self.public_key)
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(material).decode()}"

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse a vkey string of type 0x01 (Ed25519) or 0x04 (cosignature/v1).

        Raises:
            NoteError: malformed, another key type, or a key id that does not match.
        """
        name, plus, rest = vkey.strip().partition("+")
        hex_id, plus2, material_b64 = rest.partition("+")
        if not plus or not plus2 or not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise NoteError(f"vkey {vkey[:80]!r} is not <name>+<8 hex>+<base64 key>")
        check_key_name(name)
        try:
            material = base64.b64decode(material_b64, validate=True)
        except ValueError:
            raise NoteError(f"vkey {vkey[:80]!r}: the key is not valid base64") from None
        if len(material) != 33 or material[0] not in SIGNATURE_TYPES:
            raise NoteError(
                f"vkey {vkey[:80]!r}: only Ed25519 (type 0x01) and cosignature/v1 (0x04) keys "
                "are supported"
            )
        verifier = cls(name, material[0], Ed25519PublicKey.from_public_bytes(material[1:]))
        if verifier.key_id != int(hex_id, 16):
            raise NoteError(f"vkey {vkey[:80]!r}: its key id does not match its key")
        return verifier

    def check(self, text: str, signature: bytes) -> int | None:
        """Verify one signature (after the key id) over ``text``.

        Returns:
            The cosignature's timestamp, or None for a plain Ed25519 signature.

        Raises:
            NoteError: the signature does not verify.
        """
        timestamp: int | None = None
        message = text.encode()
        if self.signature_type == COSIGNATURE_V1:
            if len(signature) != 72:
                raise NoteError(f"cosignature by {self.name} has the wrong length")
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp >= 1 << 63:
                raise NoteError(f"cosignature by {self.name} has an invalid timestamp")
            message, signature = cosigned_message(text, timestamp), signature[8:]
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            raise NoteError(
                f"signature by {self.name} ({self.key_id:08x}) does not verify"
            ) from None
        return timestamp


@dataclass(frozen=True)
class SignedNote:
    """A note text with its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...] = ()

    def render(self) -> str:
        """The note as text: the text, a blank line, the signature lines."""
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)

    @classmethod
    def parse(cls, data: str) -> SignedNote:
        """Parse a signed note (the text ends at the last blank line).

        Raises:
            NoteError: not a signed note.
        """
        if _CONTROL.search(data):
            raise NoteError("note holds control characters")
        at = data.rfind("\n\n")
        if at < 0 or not data.endswith("\n"):
            raise NoteError("not a signed note: no blank line before the signature lines")
        text, lines = data[: at + 1], data[at + 2 :].splitlines()
        if not lines or len(lines) > MAX_SIGNATURES:
            raise NoteError(f"a signed note needs 1 to {MAX_SIGNATURES} signature lines")
        signatures = []
        for line in lines:
            prefix, name, blob = [*line.split(" "), "", ""][:3]
            if prefix != EM_DASH or line != f"{EM_DASH} {name} {blob}":
                raise NoteError(f"malformed signature line {line[:80]!r}")
            check_key_name(name)
            try:
                raw = base64.b64decode(blob, validate=True)
            except ValueError:
                raise NoteError(f"signature of {name} is not valid base64") from None
            if len(raw) < 5:
                raise NoteError(f"signature of {name} is too short")
            signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
        return cls(text, tuple(signatures))

    def verify(self, verifiers: Iterable[Verifier]) -> dict[Verifier, int | None]:
        """Verify the signatures by known keys.

        Returns:
            Each known key whose signature verified, with its cosignature timestamp
            (None for plain signatures).

        Raises:
            NoteError: a known key's signature fails, or none verifies.
        """
        known = {(v.name, v.key_id): v for v in verifiers}
        verified: dict[Verifier, int | None] = {}
        for sig in self.signatures:
            verifier = known.get((sig.name, sig.key_id))
            if verifier is not None:
                verified[verifier] = verifier.check(self.text, sig.signature)
        if not verified:
            names = ", ".join(sorted({f"{s.name} ({s.key_id:08x})" for s in self.signatures}))
            raise NoteError(f"signed only by keys that are not trusted: {names or 'nobody'}")
        return verified

    def with_signature(self, signature: NoteSignature) -> SignedNote:
        """Return the note with one more signature line (replacing the same key's)."""
        kept = tuple(
            s for s in self.signatures if (s.name, s.key_id) != (signature.name, signature.key_id)
        )
        return SignedNote(self.text, (*kept, signature))


def sign(
    text: str, *, name: str, private_key: Ed25519PrivateKey, public_key: bytes | None = None
) -> NoteSignature:
    """Sign a note text with an Ed25519 (0x01) key named ``name``.

    ``public_key`` is the key's raw public half, when the caller has it already.

    Raises:
        NoteError: the name or text is not allowed in a note.
    """
    _check_text(text)
    public = raw_public_key(private_key.public_key()) if public_key is None else public_key
    return NoteSignature(
        check_key_name(name), key_id(name, ED25519, public), private_key.sign(text.encode())
    )


def cosign(
    text: str, *, name: str, private_key: Ed25519PrivateKey, timestamp: int
) -> NoteSignature:
    """Cosign a checkpoint text as witness ``name`` (c2sp.org/tlog-cosignature, Ed25519).

    Raises:
        NoteError: the name, text or timestamp is not allowed.
    """
    _check_text(text)
    if not 0 <= timestamp < 1 << 63:
        raise NoteError(f"cosignature timestamp {timestamp} is out of range")
    public = raw_public_key(private_key.public_key())
    signed = private_key.sign(cosigned_message(text, timestamp))
    return NoteSignature(
        check_key_name(name),
        key_id(name, COSIGNATURE_V1, public),
        timestamp.to_bytes(8, "big") + signed,
    )


def _check_text(text: str) -> None:
    if not text.endswith("\n") or _CONTROL.search(text):
        raise NoteError("a note text must end with a newline and hold no control characters")


def verifiers_for(name: str, keys: Sequence[Ed25519PublicKey]) -> list[Verifier]:
    """Ed25519 note verifiers named ``name`` for each of ``keys``."""
    return [Verifier(name, ED25519, key) for key in keys]
