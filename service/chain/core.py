"""Hash chaining and signed checkpoints.

Each record commits to its sequence number and to the previous record's hash::

    hash_n = SHA-256( encode({"seq": n, "prev": hash_{n-1}, "body": body_n}) )

with ``hash_{-1}`` = 64 zeros. ``encode`` is the chain's canonical encoding: RFC 8785
(JCS) for the ledger; the audit log may use its own documented deterministic encoding.
A checkpoint (in the spirit of Certificate Transparency signed tree heads) signs
``{"log", "seq", "head", "time", "key_id"}`` so that a later verifier can tell whether
records after it were cut off or whole segments went missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from service.keys.canonical import canonical_json
from service.keys.errors import KeyError_
from service.keys.store import Signer, TrustStore

GENESIS_HASH = "0" * 64

Encoder = Callable[[Any], bytes]


def link_hash(seq: int, prev_hash: str, body: Any, *, encode: Encoder = canonical_json) -> str:
    """Return the hash that links record ``seq`` with ``body`` to ``prev_hash``."""
    return hashlib.sha256(encode({"seq": seq, "prev": prev_hash, "body": body})).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that log ``log`` had head ``head`` at sequence ``seq``."""

    log: str
    seq: int
    head: str
    time: str
    key_id: str
    signature: str = ""

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers (everything but the signature)."""
        body = asdict(self)
        body.pop("signature")
        return canonical_json(body)

    @classmethod
    def create(cls, *, log: str, seq: int, head: str, time: str, signer: Signer) -> Checkpoint:
        """Create and sign a checkpoint."""
        unsigned = cls(log=log, seq=seq, head=head, time=time, key_id=signer.key_id)
        return cls(**{**asdict(unsigned), "signature": signer.sign_b64(unsigned.signed_bytes())})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """Parse a checkpoint's JSON form.

        Raises:
            ValueError: a field is missing or of the wrong type.
        """
        try:
            cp = cls(
                log=str(data["log"]),
                seq=int(data["seq"]),
                head=str(data["head"]),
                time=str(data["time"]),
                key_id=str(data["key_id"]),
                signature=str(data["signature"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed checkpoint: {err}") from None
        return cp

    def verify(self, trust: TrustStore) -> None:
        """Check the checkpoint's signature against the trust store.

        Raises:
            service.keys.errors.KeyError_: untrusted key or bad signature.
        """
        trust.verify_b64(self.key_id, self.signature, self.signed_bytes())


def verify_checkpoint(cp: Checkpoint, trust: TrustStore, position: str) -> None:
    """Verify a checkpoint's signature, raising a chain error that names ``position``."""
    from service.chain.errors import ChainVerificationError

    try:
        cp.verify(trust)
    except KeyError_ as err:
        raise ChainVerificationError(position, f"checkpoint {err}") from None
