"""Checkpoints as C2SP ``tlog-checkpoint`` signed notes (c2sp.org/tlog-checkpoint).

A checkpoint's note text is exactly three lines::

    <origin>
    <tree size>
    <base64 RFC 6962 root hash>

signed (note signature type 0x01, Ed25519) under the key name ``<origin>`` by a key the
verifier trusts; witnesses may add ``cosignature/v1`` lines (:mod:`service.chain.note`).
Origins are ``ztml.local/ledger/<first 32 hex of the ledger's genesis record hash>`` and
``ztml.local/audit/<log id>``, so each chain has its own, and copies of one ledger share
it.

:class:`LogCheckpoint` is the form an audit checkpoint is written, anchored and stored
in: ``{"log": <log id>, "note": <signed note text>}``. The JSON checkpoints written by
earlier versions (:class:`service.chain.core.Checkpoint`) are still read and verified;
:func:`checkpoint_from_dict` tells the two apart.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service.chain.core import Checkpoint
from service.chain.errors import CheckpointMismatchError, NoteError
from service.chain.merkle import EMPTY_ROOT, HASH_SIZE
from service.chain.note import (
    COSIGNATURE_V1,
    SignedNote,
    Verifier,
    check_key_name,
    cosign,
    sign,
    verifiers_for,
)
from service.keys.store import Signer, TrustStore

ORIGIN_PREFIX = "ztml.local/"
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")


def ledger_origin(genesis_hash: str) -> str:
    """The origin of the ledger whose record 0 has hash ``genesis_hash``."""
    return f"{ORIGIN_PREFIX}ledger/{genesis_hash[:32]}"


def audit_origin(log_id: str) -> str:
    """The origin of audit chain ``log_id``."""
    return f"{ORIGIN_PREFIX}audit/{log_id}"


@dataclass(frozen=True)
class TreeCheckpoint:
    """A signed tree head: origin, size and root hash, as a signed note.

    Attributes:
        origin: the log's identity (the first line).
        size: the number of leaves (records) the tree holds.
        root: the RFC 6962 root hash of those leaves.
        note: the signed note (its text is the three lines above).
    """

    origin: str
    size: int
    root: bytes
    note: SignedNote

    @property
    def seq(self) -> int:
        """The sequence number of the last record covered (``size - 1``)."""
        return self.size - 1

    @property
    def text(self) -> str:
        """The whole signed note, as stored and exchanged."""
        return self.note.render()

    @staticmethod
    def body(origin: str, size: int, root: bytes) -> str:
        """The note text of a checkpoint."""
        return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"

    @classmethod
    def create(cls, *, origin: str, size: int, root: bytes, signer: Signer) -> TreeCheckpoint:
        """Sign a checkpoint with ``signer``'s key under the key name ``origin``.

        Raises:
            NoteError: the origin cannot be a key name, or the size or root is malformed.
        """
        check_key_name(origin)
        if size < 0 or len(root) != HASH_SIZE:
            raise NoteError(f"cannot sign a checkpoint of size {size} with a malformed root")
        text = cls.body(origin, size, root)
        signature = sign(
            text, name=origin, private_key=signer.private_key, public_key=signer.public_bytes
        )
        return cls(origin, size, root, SignedNote(text, (signature,)))

    @classmethod
    def parse(cls, data: str) -> TreeCheckpoint:
        """Parse a checkpoint note (nothing is verified here).

        Raises:
            NoteError: not a signed note, or its text is not origin, size and root.
        """
        note = SignedNote.parse(data)
        lines = note.text.split("\n")[:-1]
        if len(lines) != 3:
            raise NoteError(
                f"checkpoint text has {len(lines)} lines; ztml writes exactly three (origin, "
                "size, root hash)"
            )
        origin, size_text, root_b64 = lines
        if not origin or not _SIZE_RE.fullmatch(size_text):
            raise NoteError("checkpoint origin is empty or its size is not a decimal number")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except ValueError:
            raise NoteError("checkpoint root hash is not valid base64") from None
        if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_b64:
            raise NoteError("checkpoint root hash is not 32 bytes in canonical base64")
        return cls(origin, int(size_text), root, note)

    def require_held(
        self,
        *,
        size: int,
        root: bytes | None,
        what: str,
        log: str = "ledger",
        entries: str = "records",
    ) -> None:
        """Require a log of ``size`` entries to hold this checkpoint's tree.

        Args:
            size: how many entries the log holds.
            root: the root of the log's first ``self.size`` entries (None when it has
                fewer).
            what: what this checkpoint is, for the message (e.g. "a checkpoint this
                verifier saw earlier").
            log: what the log is called in the message ("ledger", "log").
            entries: what its entries are called ("records", "events").

        Raises:
            CheckpointMismatchError: the log ends before this checkpoint's last entry (cut
                off, or rolled back; at the first missing entry), or its tree at this size
                has another root (rewritten).
        """
        if self.size > size:
            first, last = size, self.size - 1
            missing = (
                f"{entries[:-1]} seq {first} was"
                if first == last
                else f"{entries} seq {first}..{last} were"
            )
            raise CheckpointMismatchError(
                f"seq {size}",
                f"missing: the {log} ends at seq {size - 1} but {what} (size {self.size}) "
                f"vouches for seq {last}: {missing} truncated (cut off), or the {log} was "
                "rolled back",
                seq=size,
            )
        if (EMPTY_ROOT if self.size == 0 else root) != self.root:
            raise CheckpointMismatchError(
                f"checkpoint of size {self.size}",
                f"the {entries} seq 0..{self.size - 1} do not have the root {what} signed: "
                f"the {log} was rewritten before it",
                seq=self.size - 1,
            )

    def log_verifiers(self, keys: Iterable[Ed25519PublicKey]) -> list[Verifier]:
        """Ed25519 verifiers named after this checkpoint's origin, one per key."""
        return verifiers_for(self.origin, list(keys))

    def verify(self, trust: TrustStore, *, witnesses: Sequence[Verifier] = ()) -> None:
        """Check a log signature by a trusted key, and every witness's cosignature.

        Args:
            trust: keys trusted to sign checkpoints (under the origin's key name).
            witnesses: ``cosignature/v1`` verifiers that must all have cosigned.

        Raises:
            NoteError: no trusted log signature, a bad signature, or a missing witness.
        """
        log_keys = self.log_verifiers(trust.keys.values())
        verified = self.note.verify([*log_keys, *witnesses])
        if not any(v in verified for v in log_keys):
            raise NoteError(f"checkpoint of {self.origin} carries no signature by a trusted key")
        self._require_witnesses(witnesses, verified)

    def verify_witnesses(self, witnesses: Sequence[Verifier]) -> None:
        """Check every witness's cosignature (the log's own signature is not checked here).

        Raises:
            NoteError: a cosignature by a witness's key fails, or a witness did not cosign.
        """
        signed = {(s.name, s.key_id) for s in self.note.signatures}
        present = [w for w in witnesses if (w.name, w.key_id) in signed]
        self._require_witnesses(witnesses, self.note.verify(present) if present else {})

    def _require_witnesses(
        self, witnesses: Sequence[Verifier], verified: Mapping[Verifier, int | None]
    ) -> None:
        missing = [w.name for w in witnesses if w not in verified]
        if missing:
            raise NoteError(
                f"checkpoint of {self.origin} at size {self.size} is not cosigned by the "
                f"witness(es) {', '.join(missing)}"
            )

    def cosigned(self, *, name: str, signer: Signer, timestamp: int) -> TreeCheckpoint:
        """Return the checkpoint with a ``cosignature/v1`` by witness ``name`` added.

        Raises:
            NoteError: the name is not a valid key name.
        """
        signature = cosign(
            self.note.text, name=name, private_key=signer.private_key, timestamp=timestamp
        )
        return TreeCheckpoint(
            self.origin, self.size, self.root, self.note.with_signature(signature)
        )


def witness_verifier(name: str, key: Ed25519PublicKey) -> Verifier:
    """The ``cosignature/v1`` verifier of witness ``name`` with public key ``key``."""
    return Verifier(check_key_name(name), COSIGNATURE_V1, key)


def parse_witness_keys(vkeys: Iterable[str]) -> list[Verifier]:
    """Parse witness verifier keys (``cosignature/v1`` vkeys, as ``ztml ledger cosign`` prints).

    Raises:
        NoteError: a vkey is malformed or of another type (named).
    """
    witnesses = [Verifier.parse(vkey) for vkey in vkeys]
    for witness in witnesses:
        if witness.signature_type != COSIGNATURE_V1:
            raise NoteError(
                f"vkey of {witness.name} is not a witness key: a cosignature/v1 vkey (type "
                "0x04) is needed, as `ztml ledger cosign` prints"
            )
    return witnesses


@dataclass(frozen=True)
class LogCheckpoint:
    """A tree checkpoint of an audit chain, as written into segments and anchored.

    Attributes:
        log: the audit log id (its directory name); the origin is ``audit_origin(log)``.
        checkpoint: the signed tree head.
    """

    log: str
    checkpoint: TreeCheckpoint

    @property
    def seq(self) -> int:
        """The sequence number of the last event covered."""
        return self.checkpoint.seq

    @property
    def size(self) -> int:
        """The number of events covered."""
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        """The tree's root hash."""
        return self.checkpoint.root

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"log", "note"}``."""
        return {"log": self.log, "note": self.checkpoint.text}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogCheckpoint:
        """Parse the JSON form.

        Raises:
            ValueError: wrong fields, or a note that is not this log's checkpoint.
        """
        if set(data) != {"log", "note"} or not all(isinstance(v, str) for v in data.values()):
            raise ValueError('malformed checkpoint: expected {"log": str, "note": str}')
        try:
            checkpoint = TreeCheckpoint.parse(data["note"])
        except NoteError as err:
            raise ValueError(f"malformed checkpoint note: {err}") from None
        if checkpoint.origin != audit_origin(data["log"]):
            raise ValueError(
                f"checkpoint origin {checkpoint.origin!r} is not log {data['log']!r}'s"
            )
        if checkpoint.size == 0:
            raise ValueError("checkpoint of an empty log")
        return cls(data["log"], checkpoint)

    def verify(self, trust: TrustStore) -> None:
        """Check the log signature against the trust store.

        Raises:
            NoteError: no trusted signature verifies, or one fails.
        """
        self.checkpoint.verify(trust)


AnyCheckpoint = Checkpoint | LogCheckpoint


def checkpoint_from_dict(data: dict[str, Any]) -> AnyCheckpoint:
    """Parse a checkpoint's JSON form: a tree checkpoint, or one of the earlier format.

    Raises:
        ValueError: neither form.
    """
    if "note" in data:
        return LogCheckpoint.from_dict(data)
    return Checkpoint.from_dict(data)
