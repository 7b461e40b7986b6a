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
from datetime import UTC, datetime
from typing import Any

from service.keys.canonical import canonical_json
from service.keys.errors import KeyError_
from service.keys.store import Signer, TrustStore

GENESIS_HASH = "0" * 64

#: How far a record's time may lie before the newest earlier time of its chain (seconds):
#: several writers' clocks (ledger replicas, an audit log's threads) differ a little,
#: and five minutes is the usual allowance (Kerberos' default clock skew).
MAX_CLOCK_SKEW_S = 300

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


def parse_utc(text: str) -> datetime:
    """Parse an RFC 3339 UTC time ending in ``Z`` (e.g. ``2026-11-22T10:00:00.123Z``).

    Raises:
        ValueError: not such a time.
    """
    if not text.endswith("Z"):
        raise ValueError(f"time {text!r} is not UTC (no 'Z')")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


class TimeOrder:
    """Checks that the times of a chain's records never go back beyond the clock skew.

    Args:
        skew_s: how many seconds a time may lie before the newest earlier one.
    """

    def __init__(self, skew_s: float = MAX_CLOCK_SKEW_S) -> None:
        self.skew_s = skew_s
        self.newest: datetime | None = None
        self.newest_text = ""
        self.newest_seq = -1

    def check(self, seq: int, text: str) -> None:
        """Fold in record ``seq``'s time.

        Raises:
            ValueError: the time is unparsable or goes back beyond the skew (the message
                names both times and the record that set the newer one).
        """
        when = parse_utc(text)
        newest = self.newest
        if newest is not None:
            behind = (newest - when).total_seconds()
            if behind > self.skew_s:
                raise ValueError(
                    f"time {text} goes back {behind:.0f} s before {self.newest_text} (seq "
                    f"{self.newest_seq}): beyond the allowed clock skew of {self.skew_s:.0f} s"
                )
        if newest is None or when > newest:
            self.newest, self.newest_text, self.newest_seq = when, text, seq
