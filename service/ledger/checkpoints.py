"""The ledger as an RFC 6962 Merkle tree, and its signed checkpoints.

Leaf ``n`` of the tree is record ``seq n`` in its canonical JSON form (RFC 8785, exactly
as stored and exported). Every append also signs a C2SP checkpoint of the tree that
ends with its record, with the appender's key, under the ledger's origin
(``ztml.local/ledger/<first 32 hex of record 0's hash>``), and stores it with the tree's
frontier in the same transaction (:func:`next_checkpoint`).

Verification (:class:`TreeCheck`, driven by :class:`~service.ledger.verify.ChainVerifier`)
then knows how far the ledger is *proven*: the newest checkpoint that verifies and whose
root equals the root of the records up to its size. Records after it are reported as
unproven. A checkpoint beyond the last record means records were cut off; a root that
differs means records before it were rewritten; and a checkpoint this verifier saw
earlier (:class:`~service.chain.seen.SeenCheckpoints`) that the ledger no longer reaches
means it was rolled back.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.chain.errors import CheckpointMismatchError, NoteError, ProofError
from service.chain.merkle import Frontier, leaf_hash
from service.chain.note import Verifier
from service.chain.proofs import TreeProver
from service.chain.tlog import TreeCheckpoint, ledger_origin
from service.keys.store import Signer, TrustStore
from service.ledger.errors import LedgerError, LedgerIntegrityError, RecordSchemaError
from service.ledger.records import Record, record_from_json
from service.ledger.storage import AppendView, CheckpointRow, Row


def record_leaf(record: Record) -> bytes:
    """The leaf bytes of a record: its canonical JSON text."""
    return record.to_json().encode()


def _stored(row: Row) -> Record:
    if isinstance(row.record, bytes):
        raise LedgerIntegrityError(f"seq {row.seq}", "stored record is not valid UTF-8")
    try:
        return record_from_json(row.record)
    except RecordSchemaError as err:
        raise LedgerIntegrityError(f"seq {row.seq}", f"malformed record: {err}") from None


def parse_checkpoint(note: str, where: str) -> TreeCheckpoint:
    """Parse a stored or exported checkpoint note.

    Raises:
        LedgerIntegrityError: it is not a checkpoint note.
    """
    try:
        return TreeCheckpoint.parse(note)
    except NoteError as err:
        raise LedgerIntegrityError(where, f"malformed checkpoint: {err}") from None


class _Frontiers:
    """The frontiers this process wrote lately, by their stored text.

    The next append reads back the frontier the last one stored; taking the parsed one
    saves parsing it again. Frontiers are immutable, so they can be shared.
    """

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._known: OrderedDict[str, Frontier] = OrderedDict()
        self._lock = threading.Lock()

    def parse(self, text: str) -> Frontier:
        """The frontier stored as ``text``.

        Raises:
            ProofError: the text is not a frontier.
        """
        found = self._known.get(text)
        return Frontier.from_text(text) if found is None else found

    def text(self, frontier: Frontier) -> str:
        """The stored text of ``frontier``, remembered for :meth:`parse`."""
        text = frontier.to_text()
        with self._lock:
            self._known[text] = frontier
            while len(self._known) > self._size:
                self._known.popitem(last=False)
        return text


_FRONTIERS = _Frontiers()


def next_checkpoint(
    view: AppendView, record: Record, signer: Signer, *, leaf: bytes | None = None
) -> CheckpointRow:
    """Extend the tree by ``record`` and sign the checkpoint of the new size.

    ``leaf`` is the record's canonical JSON when the caller has it already.

    Runs inside the append lock. The tree's frontier comes from the newest stored
    checkpoint; records appended after it (by an earlier version, or imported) are read
    and hashed first.

    Raises:
        LedgerIntegrityError: a stored checkpoint lies beyond the head (records were cut
            off), or a stored record or frontier is malformed.
    """
    latest = view.latest_checkpoint()
    size = record.seq
    frontier = Frontier()
    origin = None
    if latest is not None:
        if latest.size > size:
            raise LedgerIntegrityError(
                f"seq {size}",
                f"missing: a stored checkpoint covers {latest.size} records but the ledger "
                f"ends at seq {size - 1}: records were cut off; run `ztml ledger verify`",
            )
        origin = latest.note.split("\n", 1)[0]  # verification checks the whole note
        try:
            frontier = _FRONTIERS.parse(latest.frontier)
        except ProofError as err:
            raise LedgerIntegrityError(f"checkpoint of size {latest.size}", str(err)) from None
    if frontier.size < size:
        for row in view.rows_between(frontier.size, size):
            frontier = frontier.append(leaf_hash(record_leaf(_stored(row))))
    if frontier.size != size:
        raise LedgerIntegrityError(f"seq {frontier.size}", "missing from the ledger's storage")
    if origin is None:
        genesis = record if size == 0 else view.row(0)
        if genesis is None:
            raise LedgerIntegrityError("seq 0", "missing from the ledger's storage")
        origin = ledger_origin((genesis if isinstance(genesis, Record) else _stored(genesis)).hash)
    frontier = frontier.append(leaf_hash(record_leaf(record) if leaf is None else leaf))
    signed = TreeCheckpoint.create(
        origin=origin, size=frontier.size, root=frontier.root(), signer=signer
    )
    return CheckpointRow(signed.size, signed.text, _FRONTIERS.text(frontier))


@dataclass
class TreeReport:
    """How far verification proved the ledger complete.

    Attributes:
        origin: the ledger's origin (None for an empty ledger).
        checkpoint: the newest checkpoint that verified and matches the records.
        seen: the checkpoint this verifier had kept from an earlier run, if any.
    """

    origin: str | None = None
    checkpoint: TreeCheckpoint | None = None
    seen: TreeCheckpoint | None = None

    @property
    def proven_seq(self) -> int:
        """The last record covered by a signed checkpoint (-1: none)."""
        return -1 if self.checkpoint is None else self.checkpoint.seq


class TreeCheck:
    """Hashes records into the tree as they are verified and checks the checkpoints.

    Args:
        trust: keys trusted to sign checkpoints.
        claimed: the ledger's newest stored (or exported) checkpoint note, if any.
        seen: the checkpoint this verifier kept from an earlier run, if any.
        witnesses: ``cosignature/v1`` verifiers that must have cosigned ``claimed``.
    """

    def __init__(
        self,
        trust: TrustStore,
        *,
        claimed: str | None,
        seen: TreeCheckpoint | None = None,
        witnesses: Sequence[Verifier] = (),
    ) -> None:
        self.trust = trust
        self.witnesses = tuple(witnesses)
        self.claimed = None if claimed is None else parse_checkpoint(claimed, "checkpoint")
        self.seen = seen
        self.frontier = Frontier()
        self.origin: str | None = None
        self._roots: dict[int, bytes] = {}
        self._wanted = {cp.size for cp in (self.claimed, seen) if cp is not None}

    def _verify_signature(self, checkpoint: TreeCheckpoint, what: str) -> None:
        try:
            checkpoint.verify(self.trust, witnesses=self.witnesses)
        except NoteError as err:
            raise LedgerIntegrityError(
                f"checkpoint of size {checkpoint.size}", f"{what} is rejected: {err}"
            ) from None

    def add(self, record: Record) -> None:
        """Add the next verified record as a leaf."""
        if self.origin is None:
            self.origin = ledger_origin(record.hash)
            for checkpoint in (self.claimed, self.seen):
                if checkpoint is not None and checkpoint.origin != self.origin:
                    raise LedgerIntegrityError(
                        "seq 0",
                        f"the checkpoint of {checkpoint.origin} is not this ledger's (origin "
                        f"{self.origin}): another ledger's, or record 0 was replaced",
                    )
        self.frontier = self.frontier.append(leaf_hash(record_leaf(record)))
        if self.frontier.size in self._wanted:
            self._roots[self.frontier.size] = self.frontier.root()

    def finish(self) -> TreeReport:
        """Check the checkpoints against the whole ledger.

        Raises:
            LedgerIntegrityError: a checkpoint lies beyond the last record (truncation),
                or its root differs from the records' (a rewrite), naming the position.
        """
        count = self.frontier.size
        if self.claimed is not None:
            self._verify_signature(self.claimed, "the ledger's newest checkpoint")
        for checkpoint, what in (
            (self.seen, "a checkpoint this verifier saw earlier"),
            (self.claimed, "the ledger's newest signed checkpoint"),
        ):
            if checkpoint is None:
                continue
            try:
                checkpoint.require_held(
                    size=count, root=self._roots.get(checkpoint.size), what=what
                )
            except CheckpointMismatchError as err:
                raise LedgerIntegrityError(err.position, err.reason) from None
        return TreeReport(origin=self.origin, checkpoint=self.claimed, seen=self.seen)


def require_coverage(report: TreeReport, seqs: Sequence[int], what: str) -> None:
    """Require a signed checkpoint to cover every record in ``seqs``.

    Raises:
        LedgerIntegrityError: one is after the newest checkpoint (named, unproven).
    """
    late = [seq for seq in seqs if seq > report.proven_seq]
    if late:
        covered = (
            "no signed checkpoint covers any record"
            if report.checkpoint is None
            else f"the newest signed checkpoint covers seq 0..{report.proven_seq}"
        )
        raise LedgerIntegrityError(
            f"seq {late[0]}",
            f"{what} at seq {', '.join(map(str, late))} is unproven: {covered}. Append "
            "through ztml (every append signs a checkpoint) or run `ztml ledger upgrade`",
        )


class Prover(TreeProver):
    """Makes inclusion and consistency proofs over a ledger's records (tree built once).

    Args:
        records: the ledger's records, in order.
    """

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = list(records)
        super().__init__([record_leaf(r) for r in self.records])

    def check(self, checkpoint: TreeCheckpoint) -> None:
        """Require ``checkpoint`` to match the records.

        Raises:
            LedgerIntegrityError: it does not.
        """
        try:
            super().check(checkpoint)
        except ProofError as err:
            raise LedgerIntegrityError(f"checkpoint of size {checkpoint.size}", str(err)) from None

    def inclusion(self, checkpoint: TreeCheckpoint, index: int) -> dict[str, Any]:
        """The proof that record ``index`` is in the tree ``checkpoint`` signs.

        Raises:
            LedgerError: the record is not covered, or the records do not match.
        """
        try:
            return super().inclusion(checkpoint, index)
        except ProofError as err:
            raise LedgerError(str(err)) from None

    def consistency(self, old: TreeCheckpoint | int, new: TreeCheckpoint) -> dict[str, Any]:
        """The proof that the tree of ``old`` is a prefix of the tree of ``new``.

        Raises:
            LedgerError: the sizes are out of order, or the records do not match.
        """
        try:
            return super().consistency(old, new)
        except ProofError as err:
            raise LedgerError(str(err)) from None
