"""Verification of a ledger chain, stored or exported.

For every record, in order: its shape, ``seq`` continuity from 0, the ``prev_hash``
link, the recomputed hash, a signature by a trusted key (canonical base64), the
type-specific payload schema and the event rules. The first failure raises
:class:`LedgerIntegrityError` naming that record's position and what is wrong. A signed
checkpoint (or an expected ``seq``/head) later than the tail reveals truncation; one that
disagrees with the stored hash at its ``seq`` reveals a rewrite.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from service.chain.core import GENESIS_HASH, Checkpoint
from service.keys.errors import KeyError_
from service.keys.store import TrustStore
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
    """

    def __init__(
        self,
        trust: TrustStore,
        *,
        expect: Checkpoint | ExpectedHead | None = None,
        cache: SignatureCache | None = None,
    ) -> None:
        self.trust = trust
        self.cache = cache
        self._raw = {
            kid: key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            for kid, key in trust.keys.items()
        }
        self.expect = self._expected(expect)
        self.report = VerifyReport()
        self._models: dict[str, ModelState] = {}
        self._anchors: dict[str, Record] = {}
        self._hash_at_expect: str | None = None

    def _expected(self, expect: Checkpoint | ExpectedHead | None) -> ExpectedHead | None:
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
                Checkpoint.from_dict(record.payload).verify(self.trust)
            except (ValueError, KeyError_) as err:
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
        """Check the expected head (truncation) and return the report."""
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


def verify_records(
    records: Iterable[Any],
    trust: TrustStore,
    *,
    expect: Checkpoint | ExpectedHead | None = None,
    cache: SignatureCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify records given as :class:`Record` objects or parsed JSON dicts.

    Raises:
        LedgerIntegrityError: the first bad record, its position and what is wrong.
    """
    verifier = ChainVerifier(trust, expect=expect, cache=cache)
    for item in records:
        if isinstance(item, Record):
            verifier.check(item)
        else:
            verifier.check_data(item)
        if progress is not None:
            progress(1)
    return verifier.finish()


def _records_of(export: Any) -> list[Any]:
    if isinstance(export, Mapping):
        export = export.get("records")
    if not isinstance(export, list):
        raise LedgerIntegrityError(
            "export", "is not a list of records (nor an object with a 'records' list)"
        )
    return export


def parse_export(text: str | bytes) -> list[Any]:
    """Parse the JSON text of an export (as written by ``ztml ledger export``).

    The one reader of the export format: a JSON list of records, or an object with a
    ``records`` list (its ``verified`` flag is never trusted). Nothing is verified here.

    Returns:
        The records as parsed JSON, in chain order.

    Raises:
        LedgerIntegrityError: the text is not JSON or holds no list of records.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        data = parse_json(text)
    except (UnicodeDecodeError, ValueError) as err:
        raise LedgerIntegrityError("export", f"is not valid JSON: {err}") from None
    return _records_of(data)


def verify_export(
    records: Any,
    trust: TrustStore,
    *,
    expect: Checkpoint | ExpectedHead | None = None,
    cache: SignatureCache | None = None,
) -> VerifyReport:
    """Verify an export offline: a list of records or ``{"verified", "records"}``.

    The ``verified`` flag of an export is never trusted; the records are verified.

    Raises:
        LedgerIntegrityError: the first bad record, its position and what is wrong.
    """
    return verify_records(_records_of(records), trust, expect=expect, cache=cache)


def verify_export_text(
    text: str | bytes,
    trust: TrustStore,
    *,
    expect: Checkpoint | ExpectedHead | None = None,
    cache: SignatureCache | None = None,
) -> VerifyReport:
    """Verify the JSON text of an export (as written by ``ztml ledger export``).

    Raises:
        LedgerIntegrityError: the text is not JSON, or names the first bad record.
    """
    return verify_records(parse_export(text), trust, expect=expect, cache=cache)


def verified_export_records(text: str | bytes, trust: TrustStore) -> list[Record]:
    """Parse and verify the JSON text of an export; return its records.

    Every record is checked as :func:`verify_export_text` does (chain, hashes,
    signatures by ``trust``, schema, event rules) before any is returned.

    Raises:
        LedgerIntegrityError: the text is not an export, or names the first bad record.
    """
    verifier = ChainVerifier(trust)
    records = [verifier.check_data(item) for item in parse_export(text)]
    verifier.finish()
    return records
