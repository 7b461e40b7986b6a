"""Verification of a ledger chain, stored or exported.

For every record, in order: its shape, ``seq`` continuity from 0, the ``prev_hash``
link, the recomputed hash, a signature by a trusted key (canonical base64), the
type-specific payload schema, the event rules and that its time does not go back more
than the allowed clock skew (``MAX_CLOCK_SKEW_S``) before an earlier record's. The first
failure raises :class:`LedgerIntegrityError` naming that record's position and what is
wrong.

Completeness needs a proof: the records are also hashed into the ledger's Merkle tree
(:mod:`service.ledger.checkpoints`) and checked against its newest signed checkpoint and
the checkpoint this verifier kept from an earlier run; the report says up to which
record the ledger is proven. A checkpoint (or an expected ``seq``/head) later than the
tail reveals truncation or a rollback; one that disagrees with the records reveals a
rewrite.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from service.chain.core import GENESIS_HASH, Checkpoint, TimeOrder
from service.chain.errors import NoteError, ProofError
from service.chain.note import Verifier
from service.chain.seen import SeenCheckpoints
from service.chain.tlog import TreeCheckpoint, checkpoint_from_dict, ledger_origin
from service.keys.errors import KeyError_
from service.keys.store import TrustStore
from service.ledger.checkpoints import TreeCheck, TreeReport
from service.ledger.errors import LedgerError, LedgerIntegrityError, RecordSchemaError
from service.ledger.records import Record, parse_json, record_from_dict, record_from_json
from service.ledger.rules import ModelState, ModelStatus, apply_anchor, apply_model_event
from service.ledger.schema import check_payload

LEDGER_LOG = "ztml-ledger"


@dataclass(frozen=True)
class ExpectedHead:
    """A head the ledger must contain: record ``seq`` with hash ``head``."""

    seq: int
    head: str
    source: str = "expected head"


@dataclass
class VerifyReport:
    """What an intact ledger holds."""

    count: int = 0
    head_seq: int | None = None
    head_hash: str = GENESIS_HASH
    models: dict[str, ModelStatus] = field(default_factory=dict)
    key_ids: set[str] = field(default_factory=set)
    anchors: int = 0
    checked_head: ExpectedHead | None = None
    tree: TreeReport = field(default_factory=TreeReport)

    @property
    def unproven(self) -> int:
        """How many records follow the newest signed checkpoint (not proven complete)."""
        return self.count - 1 - self.tree.proven_seq


class SignatureCache:
    """Remembers (public key, signature, message) triples that verified.

    Re-verifying an unchanged ledger then costs a SHA-256 per record instead of an
    Ed25519 verification. A hit needs the exact public key bytes, signature and signed
    bytes, so a changed record always misses. Bounded: cleared when full.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._seen: set[bytes] = set()
        self._max = max_entries

    @staticmethod
    def _key(public_raw: bytes, signature: bytes, message: bytes) -> bytes:
        return hashlib.sha256(
            len(public_raw).to_bytes(2, "big") + public_raw + signature + message
        ).digest()

    def __contains__(self, key: bytes) -> bool:
        return key in self._seen

    def add(self, key: bytes) -> None:
        """Remember one verified triple (by its key)."""
        if len(self._seen) >= self._max:
            self._seen.clear()
        self._seen.add(key)


class ChainVerifier:
    """Verifies records one at a time, in chain order (streaming, constant memory).

    Args:
        trust: keys trusted to sign records and anchored checkpoints.
        expect: a signed ledger checkpoint or an expected head the chain must reach.
        cache: optional :class:`SignatureCache` shared across verifications.
        tree: checks the records against the ledger's signed checkpoints (None: no
            completeness proof; the report then proves nothing beyond the chain).
    """

    def __init__(
        self,
        trust: TrustStore,
        *,
        expect: Checkpoint | TreeCheckpoint | ExpectedHead | None = None,
        cache: SignatureCache | None = None,
        tree: TreeCheck | None = None,
    ) -> None:
        self.trust = trust
        self.cache = cache
        self._raw = {
            kid: key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            for kid, key in trust.keys.items()
        }
        self.tree = tree
        self._expect_tree: TreeCheck | None = None
        self.expect = self._expected(expect)
        self.times = TimeOrder()
        self.report = VerifyReport()
        self._models: dict[str, ModelState] = {}
        self._anchors: dict[str, Record] = {}
        self._hash_at_expect: str | None = None

    def _expected(
        self, expect: Checkpoint | TreeCheckpoint | ExpectedHead | None
    ) -> ExpectedHead | None:
        if isinstance(expect, TreeCheckpoint):
            self._expect_tree = TreeCheck(self.trust, claimed=expect.text)
            self._expect_size = expect.size
            return None
        if not isinstance(expect, Checkpoint):
            return expect
        if expect.log != LEDGER_LOG:
            raise LedgerIntegrityError(
                "checkpoint", f"is for log {expect.log!r}, not the ledger ({LEDGER_LOG!r})"
            )
        try:
            expect.verify(self.trust)
        except KeyError_ as err:
            raise LedgerIntegrityError("checkpoint", f"rejected: {err}") from None
        return ExpectedHead(
            expect.seq, expect.head, f"checkpoint signed by {expect.key_id} at {expect.time}"
        )

    @property
    def position(self) -> str:
        """The position of the next record (its expected ``seq``)."""
        return f"seq {self.report.count}"

    def check_text(self, text: str | bytes, *, row_seq: int | None = None) -> Record:
        """Parse and check one stored record (``row_seq``: the storage's own key)."""
        pos = self.position if row_seq is None else f"seq {row_seq}"
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            record = record_from_json(text)
        except UnicodeDecodeError:
            raise LedgerIntegrityError(pos, "stored record is not valid UTF-8") from None
        except RecordSchemaError as err:
            raise LedgerIntegrityError(pos, f"malformed record: {err}") from None
        if row_seq is not None and row_seq != record.seq:
            raise LedgerIntegrityError(
                pos, f"storage row {row_seq} holds a record with seq {record.seq}"
            )
        return self.check(record)

    def check_data(self, data: Any) -> Record:
        """Check one record given as parsed JSON."""
        try:
            record = record_from_dict(data)
        except RecordSchemaError as err:
            raise LedgerIntegrityError(self.position, f"malformed record: {err}") from None
        return self.check(record)

    def check(self, record: Record) -> Record:
        """Check the next record of the chain and fold it into the report."""
        expected_seq = self.report.count
        pos = f"seq {expected_seq}"
        if record.seq != expected_seq:
            raise LedgerIntegrityError(
                pos,
                f"expected seq {expected_seq} but found seq {record.seq}: a record was "
                "removed, inserted or reordered",
            )
        if record.prev_hash != self.report.head_hash:
            raise LedgerIntegrityError(
                pos,
                "prev_hash does not match the hash of the previous record: the chain is "
                "broken (a record was removed, inserted, reordered or altered)",
            )
        try:
            encoded = record.encoded()
        except RecordSchemaError as err:
            raise LedgerIntegrityError(pos, str(err)) from None
        if encoded.hash != record.hash:
            raise LedgerIntegrityError(
                pos, "hash mismatch: the record's content was altered after it was written"
            )
        self._check_signature(record, encoded.signed_bytes, pos)
        try:
            self.times.check(record.seq, record.time)
        except ValueError as err:
            raise LedgerIntegrityError(pos, str(err)) from None
        try:
            check_payload(record.type, record.model_digest, record.payload)
            self._apply_rules(record, pos)
        except RecordSchemaError as err:
            raise LedgerIntegrityError(pos, f"invalid {record.type} record: {err}") from None
        except LedgerError as err:
            raise LedgerIntegrityError(pos, f"breaks a ledger rule: {err}") from None
        report = self.report
        report.count += 1
        report.head_seq = record.seq
        report.head_hash = record.hash
        report.key_ids.add(record.key_id)
        if self.tree is not None:
            self.tree.add(record)
        if self._expect_tree is not None:
            self._expect_tree.add(record)
        if self.expect is not None and record.seq == self.expect.seq:
            self._hash_at_expect = record.hash
            if record.hash != self.expect.head:
                raise LedgerIntegrityError(
                    pos,
                    f"hash differs from the {self.expect.source}: the ledger was rewritten "
                    "from here on",
                )
        return record

    def _check_signature(self, record: Record, signed: bytes, pos: str) -> None:
        kid = record.key_id
        public = self.trust.keys.get(kid)
        if public is None:
            raise LedgerIntegrityError(
                pos,
                f"signed by unknown key {kid} ({record.identity}): it is not in the trust "
                "store (add its .pub file to the trust directory, or pass --trust DIR)",
            )
        try:
            signature = base64.b64decode(record.signature, validate=True)
        except ValueError:
            raise LedgerIntegrityError(pos, "signature is not valid base64") from None
        if base64.b64encode(signature).decode() != record.signature:
            raise LedgerIntegrityError(pos, "signature is not canonical base64")
        key = None
        if self.cache is not None:
            key = SignatureCache._key(self._raw[kid], signature, signed)
            if key in self.cache:
                return
        try:
            public.verify(signature, signed)
        except InvalidSignature:
            raise LedgerIntegrityError(
                pos, f"signature by {kid} does not verify: the record was altered or forged"
            ) from None
        if self.cache is not None and key is not None:
            self.cache.add(key)

    def _apply_rules(self, record: Record, pos: str) -> None:
        if record.type == "anchor":
            log = str(record.payload["log"])
            try:
                checkpoint_from_dict(record.payload).verify(self.trust)
            except (ValueError, KeyError_, NoteError) as err:
                raise LedgerIntegrityError(
                    pos, f"anchored checkpoint of audit log {log!r} is rejected: {err}"
                ) from None
            self._anchors[log] = apply_anchor(self._anchors.get(log), record)
            self.report.anchors += 1
            return
        digest = str(record.model_digest)
        state = apply_model_event(self._models.get(digest), record)
        self._models[digest] = state
        self.report.models[digest] = state.status

    def finish(self) -> VerifyReport:
        """Check the expected head and the checkpoints (truncation), return the report."""
        if self.tree is not None:
            self.report.tree = self.tree.finish()
        if self._expect_tree is not None:
            self._expect_tree.finish()
            size = self._expect_size
            self.report.checked_head = ExpectedHead(
                size - 1, "", f"given checkpoint of size {size} (seq {size - 1})"
            )
        expect = self.expect
        if expect is not None:
            tail = -1 if self.report.head_seq is None else self.report.head_seq
            if expect.seq > tail:
                raise LedgerIntegrityError(
                    f"seq {tail + 1}",
                    f"missing: the ledger ends at seq {tail} but the {expect.source} "
                    f"vouches for seq {expect.seq}: records were truncated",
                )
            self.report.checked_head = expect
        return self.report


Expect = Checkpoint | TreeCheckpoint | ExpectedHead | None


def verify_records(
    records: Iterable[Any],
    trust: TrustStore,
    *,
    expect: Expect = None,
    cache: SignatureCache | None = None,
    progress: Callable[[int], None] | None = None,
    checkpoint: str | None = None,
    seen: TreeCheckpoint | None = None,
    witnesses: Sequence[Verifier] = (),
) -> VerifyReport:
    """Verify records given as :class:`Record` objects or parsed JSON dicts.

    Args:
        records: the chain, in order.
        trust: keys trusted to sign records and checkpoints.
        expect: a checkpoint or head the chain must reach.
        cache: optional signature cache.
        progress: called with 1 after each verified record.
        checkpoint: the ledger's newest signed checkpoint note (e.g. an export's).
        seen: the checkpoint this verifier kept from an earlier run.
        witnesses: witnesses that must have cosigned ``checkpoint``.

    Raises:
        LedgerIntegrityError: the first bad record, its position and what is wrong.
    """
    tree = TreeCheck(trust, claimed=checkpoint, seen=seen, witnesses=witnesses)
    verifier = ChainVerifier(trust, expect=expect, cache=cache, tree=tree)
    for item in records:
        if isinstance(item, Record):
            verifier.check(item)
        else:
            verifier.check_data(item)
        if progress is not None:
            progress(1)
    return verifier.finish()


@dataclass(frozen=True)
class Export:
    """The parsed content of a ledger export: its records and its newest checkpoint."""

    records: list[Any]
    checkpoint: str | None


def _export_of(export: Any) -> Export:
    checkpoint = None
    if isinstance(export, Mapping):
        checkpoint = export.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise LedgerIntegrityError("export", "its checkpoint is not a signed note (a string)")
        export = export.get("records")
    if not isinstance(export, list):
        raise LedgerIntegrityError(
            "export", "is not a list of records (nor an object with a 'records' list)"
        )
    return Export(export, checkpoint)


def parse_export_document(text: str | bytes) -> Export:
    """Parse the JSON text of an export (as written by ``ztml ledger export``).

    The one reader of the export format: a JSON list of records, or an object with a
    ``records`` list and the ledger's newest signed ``checkpoint`` note (its ``verified``
    flag is never trusted). Nothing is verified here.

    Raises:
        LedgerIntegrityError: the text is not JSON or holds no list of records.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        data = parse_json(text)
    except (UnicodeDecodeError, ValueError) as err:
        raise LedgerIntegrityError("export", f"is not valid JSON: {err}") from None
    return _export_of(data)


def parse_export(text: str | bytes) -> list[Any]:
    """Parse an export's JSON text and return its records (see :func:`parse_export_document`).

    Raises:
        LedgerIntegrityError: the text is not JSON or holds no list of records.
    """
    return parse_export_document(text).records


Seen = TreeCheckpoint | SeenCheckpoints | None


def _verify_export(
    export: Export,
    trust: TrustStore,
    *,
    expect: Expect,
    cache: SignatureCache | None,
    seen: Seen,
    witnesses: Sequence[Verifier],
) -> VerifyReport:
    store = seen if isinstance(seen, SeenCheckpoints) else None
    remembered = seen if isinstance(seen, TreeCheckpoint) else None
    first = export.records[0] if export.records else None
    if store is not None and isinstance(first, Mapping | Record):
        genesis = first.hash if isinstance(first, Record) else first.get("hash")
        if isinstance(genesis, str):
            try:
                remembered = store.get(ledger_origin(genesis))
            except NoteError as err:
                raise LedgerIntegrityError("verifier state", str(err)) from None
    report = verify_records(
        export.records,
        trust,
        expect=expect,
        cache=cache,
        checkpoint=export.checkpoint,
        seen=remembered,
        witnesses=witnesses,
    )
    if store is not None and report.tree.checkpoint is not None:
        try:
            store.remember(report.tree.checkpoint)
        except (NoteError, ProofError) as err:
            raise LedgerIntegrityError("verifier state", str(err)) from None
    return report


def verify_export(
    records: Any,
    trust: TrustStore,
    *,
    expect: Expect = None,
    cache: SignatureCache | None = None,
    seen: Seen = None,
    witnesses: Sequence[Verifier] = (),
) -> VerifyReport:
    """Verify an export offline: a list of records or ``{"records", "checkpoint", ...}``.

    The ``verified`` flag of an export is never trusted; the records are verified, and
    checked against the export's checkpoint for completeness and against ``seen`` (a
    checkpoint seen earlier, or this verifier's store, which then keeps the newest one)
    for a cut-off or rolled-back tail.

    Raises:
        LedgerIntegrityError: the first bad record, its position and what is wrong.
    """
    return _verify_export(
        _export_of(records), trust, expect=expect, cache=cache, seen=seen, witnesses=witnesses
    )


def verify_export_text(
    text: str | bytes,
    trust: TrustStore,
    *,
    expect: Expect = None,
    cache: SignatureCache | None = None,
    seen: Seen = None,
    witnesses: Sequence[Verifier] = (),
) -> VerifyReport:
    """Verify the JSON text of an export (as written by ``ztml ledger export``).

    Raises:
        LedgerIntegrityError: the text is not JSON, or names the first bad record.
    """
    return _verify_export(
        parse_export_document(text),
        trust,
        expect=expect,
        cache=cache,
        seen=seen,
        witnesses=witnesses,
    )


def verified_export(
    text: str | bytes, trust: TrustStore, *, seen: TreeCheckpoint | None = None
) -> tuple[list[Record], VerifyReport]:
    """Parse and verify the JSON text of an export; return its records and the report.

    Every record is checked as :func:`verify_export_text` does (chain, hashes,
    signatures by ``trust``, schema, event rules, checkpoint) before any is returned.

    Raises:
        LedgerIntegrityError: the text is not an export, or names the first bad record.
    """
    export = parse_export_document(text)
    tree = TreeCheck(trust, claimed=export.checkpoint, seen=seen)
    verifier = ChainVerifier(trust, tree=tree)
    records = [verifier.check_data(item) for item in export.records]
    return records, verifier.finish()


def verified_export_records(text: str | bytes, trust: TrustStore) -> list[Record]:
    """Parse and verify the JSON text of an export; return its records.

    Raises:
        LedgerIntegrityError: the text is not an export, or names the first bad record.
    """
    return verified_export(text, trust)[0]
