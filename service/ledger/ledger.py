"""The provenance ledger: one signed, hash-linked record per model event.

Models are identified by the SHA-256 digest of their artifact; names and versions are
labels. Each append checks the event rules inside the storage backend's append lock, so
they hold under concurrent writers too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from service.chain.core import GENESIS_HASH, Checkpoint
from service.keys.canonical import canonical_json
from service.keys.store import Signer, TrustStore
from service.ledger.errors import (
    LedgerError,
    LedgerIntegrityError,
    NotRegisteredError,
    RecordSchemaError,
)
from service.ledger.records import Record, build_record, record_from_json
from service.ledger.rules import (
    ModelState,
    anchor_subject,
    apply_anchor,
    apply_model_event,
    subject_of,
)
from service.ledger.schema import DIGEST_RE, check_payload
from service.ledger.storage import AppendView, Backend, Row
from service.ledger.verify import (
    LEDGER_LOG,
    ChainVerifier,
    ExpectedHead,
    SignatureCache,
    VerifyReport,
    verify_records,
)

Clock = Callable[[], datetime]


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` suffix, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_row(row: Row) -> Record:
    if isinstance(row.record, bytes):
        raise LedgerIntegrityError(f"seq {row.seq}", "stored record is not valid UTF-8")
    try:
        record = record_from_json(row.record)
    except RecordSchemaError as err:
        raise LedgerIntegrityError(f"seq {row.seq}", f"malformed record: {err}") from None
    if record.seq != row.seq:
        raise LedgerIntegrityError(
            f"seq {row.seq}", f"storage row {row.seq} holds a record with seq {record.seq}"
        )
    return record


def _integrity(subject: str, err: LedgerError) -> LedgerIntegrityError:
    return LedgerIntegrityError(
        subject, f"stored history breaks a rule ({err}); run `ztml ledger verify`"
    )


def _check_rules(view: AppendView, subject: str, record: Record) -> None:
    """Check the event rules for appending ``record`` after its subject's stored history.

    Raises:
        LedgerError: the record breaks a rule, or the stored history already does.
    """
    history = [_parse_row(row) for row in view.subject_rows(subject)]
    if record.type == "anchor":
        apply_anchor(history[-1] if history else None, record)
        return
    state: ModelState | None = None
    try:
        for past in history:
            state = apply_model_event(state, past)
    except LedgerError as err:
        raise _integrity(subject, err) from None
    apply_model_event(state, record)


class Ledger:
    """A provenance ledger over a storage backend (see :func:`open_ledger`).

    Args:
        backend: where the records are stored.
        clock: the time source for new records (UTC ``datetime``).
    """

    def __init__(self, backend: Backend, *, clock: Clock | None = None) -> None:
        self.backend = backend
        self._clock: Clock = clock or (lambda: datetime.now(UTC))

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """Where the ledger is (no password)."""
        return self.backend.display_url

    def close(self) -> None:
        """Release the storage connection."""
        self.backend.close()

    # --- appending -----------------------------------------------------------------

    def _append(
        self,
        *,
        record_type: str,
        model_digest: str | None,
        payload: dict[str, Any],
        signer: Signer,
    ) -> Record:
        payload = copy.deepcopy(payload)
        check_payload(record_type, model_digest, payload)
        try:
            canonical_json(payload)
        except (ValueError, TypeError) as err:
            raise RecordSchemaError(
                f"payload is not canonical JSON ({err}): use strings, finite numbers "
                "(integers within ±2**53), booleans, null, lists and objects."
            ) from None
        subject = subject_of(record_type, model_digest, payload)
        time = format_time(self._clock())

        def build(view: AppendView) -> Row:
            head = view.head()
            seq, prev = (0, GENESIS_HASH)
            if head is not None:
                head_record = _parse_row(head)
                seq, prev = head_record.seq + 1, head_record.hash
            record = build_record(
                seq=seq,
                prev_hash=prev,
                record_type=record_type,
                time=time,
                model_digest=model_digest,
                payload=payload,
                signer=signer,
            )
            _check_rules(view, subject, record)
            return Row(seq=seq, type=record_type, subject=subject, record=record.to_json())

        return _parse_row(self.backend.append(build))

    def import_records(self, records: Sequence[Record], trust: TrustStore) -> int:
        """Append records signed elsewhere (a verified export), stored unchanged.

        The records must form a whole chain from seq 0 that verifies against ``trust``
        (hashes, signatures, schema, event rules), and they and this ledger must agree
        where both have a record (same hashes; either may be longer). Each missing
        record is appended inside the
        backend's append lock, where it must link to the current head and obey the event
        rules given its subject's stored history, exactly as a new record would.

        Args:
            records: The chain to import, in order (e.g. from ``verified_export_records``).
            trust: Keys trusted to sign records.

        Returns:
            How many records were appended (0 when the ledger already holds them all).

        Raises:
            LedgerIntegrityError: the records do not verify, the ledger diverges from them,
                or another writer moved the head meanwhile.
        """
        verify_records(records, trust)
        existing = 0
        for stored in self.records():
            if existing == len(records):
                return 0  # the ledger already holds them all, and later records
            if records[existing].hash != stored.hash:
                raise LedgerIntegrityError(
                    f"seq {stored.seq}",
                    f"the ledger at {self.url} diverges from the records to import; "
                    "refusing to import",
                )
            existing += 1
        for record in records[existing:]:

            def build(view: AppendView, record: Record = record) -> Row:
                head = view.head()
                seq, prev = (0, GENESIS_HASH)
                if head is not None:
                    head_record = _parse_row(head)
                    seq, prev = head_record.seq + 1, head_record.hash
                if record.seq != seq or record.prev_hash != prev:
                    raise LedgerIntegrityError(
                        f"seq {record.seq}",
                        f"does not link to the ledger's head (next seq {seq}): another "
                        "writer appended meanwhile; retry the import",
                    )
                subject = subject_of(record.type, record.model_digest, record.payload)
                _check_rules(view, subject, record)
                return Row(seq=seq, type=record.type, subject=subject, record=record.to_json())

            self.backend.append(build)
        return len(records) - existing

    def register(
        self,
        *,
        signer: Signer,
        name: str,
        version: str,
        artifact: dict[str, Any],
        training_data_digest: str,
        code_revision: str,
        hyperparameters: dict[str, Any],
        evaluation: dict[str, Any],
        oms_bundle: dict[str, str] | None = None,
    ) -> Record:
        """Register a model by its artifact digest (``artifact``: digest, format, size).

        ``oms_bundle`` (``{"digest", "key_hint"}``) records the OMS bundle that verified
        the model at registration; a record without it is still valid.

        Raises:
            DuplicateRegistrationError: the digest is already registered.
            RecordSchemaError: a field is malformed.
        """
        payload = {
            "name": name,
            "version": version,
            "artifact": artifact,
            "training_data_digest": training_data_digest,
            "code_revision": code_revision,
            "hyperparameters": hyperparameters,
            "evaluation": evaluation,
        }
        if oms_bundle is not None:
            payload["oms_bundle"] = oms_bundle
        digest = artifact.get("digest") if isinstance(artifact, dict) else None
        return self._append(
            record_type="register", model_digest=digest, payload=payload, signer=signer
        )

    def evaluate(self, digest: str, evaluation: dict[str, Any], *, signer: Signer) -> Record:
        """Record new evaluation results for a registered model."""
        return self._append(
            record_type="evaluate",
            model_digest=digest,
            payload={"evaluation": evaluation},
            signer=signer,
        )

    def approve(self, digest: str, *, signer: Signer, comment: str = "") -> Record:
        """Approve a registered model (not by its trainer's key or identity)."""
        return self._append(
            record_type="approve", model_digest=digest, payload={"comment": comment}, signer=signer
        )

    def revoke(self, digest: str, *, signer: Signer, reason: str) -> Record:
        """Revoke a registered model; nothing but reading follows."""
        return self._append(
            record_type="revoke", model_digest=digest, payload={"reason": reason}, signer=signer
        )

    def anchor(self, checkpoint: Checkpoint, signer: Signer) -> Record:
        """Anchor a signed audit-log checkpoint (payload: the checkpoint dict).

        Raises:
            AnchorError: the checkpoint goes back or forks from the log's last anchor.
        """
        return self._append(
            record_type="anchor", model_digest=None, payload=checkpoint.to_dict(), signer=signer
        )

    # --- reading -------------------------------------------------------------------

    def count(self) -> int:
        """The number of records."""
        return self.backend.count()

    def records(self, *, start: int = 0) -> Iterator[Record]:
        """The records from ``start`` on, in order (parsed, not verified)."""
        for row in self.backend.rows(start=start):
            yield _parse_row(row)

    def head(self) -> Record | None:
        """The last record, or None for an empty ledger."""
        last = self.backend.head()
        return None if last is None else _parse_row(last)

    def anchors(self, log: str) -> list[Checkpoint]:
        """The audit checkpoints anchored for audit log ``log``, oldest first."""
        return [
            Checkpoint.from_dict(_parse_row(row).payload)
            for row in self.backend.subject_rows(anchor_subject(log))
        ]

    def history(self, digest: str) -> list[Record]:
        """The records of one model digest, oldest first (parsed, not verified)."""
        return [_parse_row(row) for row in self.backend.subject_rows(digest)]

    def resolve(self, digest: str) -> str:
        """Expand a digest or a unique prefix (>= 8 hex digits) to a registered digest.

        Raises:
            NotRegisteredError: no registered model matches.
            RecordSchemaError: the prefix is too short or matches several models.
        """
        if DIGEST_RE.fullmatch(digest):
            return digest
        hex_part = digest.removeprefix("sha256:").lower()
        if len(hex_part) < 8 or any(c not in "0123456789abcdef" for c in hex_part):
            raise RecordSchemaError(
                f"{digest!r} is not a model digest: use 'sha256:<64 hex>' or a unique prefix "
                "of at least 8 hex digits (see `ztml ledger show`)."
            )
        matches = sorted(
            {str(row.subject) for row in self.backend.rows_with_prefix("sha256:" + hex_part)}
        )
        if not matches:
            raise NotRegisteredError(
                f"No registered model has a digest starting with {digest!r}; list them with "
                "`ztml ledger show`."
            )
        if len(matches) > 1:
            raise RecordSchemaError(
                f"Digest prefix {digest!r} matches {len(matches)} models; give more digits."
            )
        return matches[0]

    def model(self, digest: str) -> ModelState:
        """What the ledger says about one model.

        Raises:
            NotRegisteredError: the digest is not registered.
        """
        state: ModelState | None = None
        try:
            for record in self.history(digest):
                state = apply_model_event(state, record)
        except LedgerIntegrityError:
            raise
        except LedgerError as err:
            raise _integrity(digest, err) from None
        if state is None:
            raise NotRegisteredError(
                f"Model {digest} is not registered; list models with `ztml ledger show`."
            )
        return state

    def models(self) -> list[ModelState]:
        """Every registered model, in registration order."""
        states: dict[str, ModelState] = {}
        try:
            for record in self.records():
                if record.type != "anchor":
                    digest = str(record.model_digest)
                    states[digest] = apply_model_event(states.get(digest), record)
        except LedgerIntegrityError:
            raise
        except LedgerError as err:
            raise _integrity("ledger", err) from None
        return list(states.values())

    # --- verification --------------------------------------------------------------

    def _verified_records(
        self,
        trust: TrustStore,
        *,
        expect: Checkpoint | ExpectedHead | None,
        cache: SignatureCache | None,
        progress: Callable[[int], None] | None,
        keep: bool,
    ) -> tuple[VerifyReport, list[Record]]:
        verifier = ChainVerifier(trust, expect=expect, cache=cache)
        kept: list[Record] = []
        rows = self.backend.rows()
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except LedgerError as err:
                raise LedgerIntegrityError(verifier.position, f"cannot be read: {err}") from None
            record = verifier.check_text(row.record, row_seq=row.seq)
            if row.type != record.type or row.subject != subject_of(
                record.type, record.model_digest, record.payload
            ):
                raise LedgerIntegrityError(
                    f"seq {row.seq}",
                    "the storage index columns (type, subject) do not match the record",
                )
            if keep:
                kept.append(record)
            if progress is not None:
                progress(1)
        return verifier.finish(), kept

    def verify(
        self,
        trust: TrustStore,
        *,
        expect: Checkpoint | ExpectedHead | None = None,
        cache: SignatureCache | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Verify the whole chain (see :mod:`service.ledger.verify`).

        Args:
            trust: keys trusted to sign records.
            expect: a signed ledger checkpoint or expected head (detects truncation).
            cache: optional signature cache for repeated verification.
            progress: called with 1 after each verified record.

        Raises:
            LedgerIntegrityError: names the first bad record and what is wrong.
        """
        report, _ = self._verified_records(
            trust, expect=expect, cache=cache, progress=progress, keep=False
        )
        return report

    def export(
        self,
        trust: TrustStore | None = None,
        *,
        expect: Checkpoint | ExpectedHead | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Return ``{"verified": bool, "records": [...]}`` (records in their exported form).

        ``verified`` is true only when ``trust`` was given and every exported record was
        verified in the same pass that read it.

        Raises:
            LedgerIntegrityError: ``trust`` was given and verification failed.
        """
        if trust is None:
            return {"verified": False, "records": [r.to_dict() for r in self.records()]}
        _, records = self._verified_records(
            trust, expect=expect, cache=None, progress=progress, keep=True
        )
        return {"verified": True, "records": [r.to_dict() for r in records]}

    def checkpoint(self, signer: Signer) -> Checkpoint:
        """Sign a checkpoint of the current head (keep it to detect truncation later).

        Raises:
            LedgerError: the ledger is empty.
        """
        head = self.head()
        if head is None:
            raise LedgerError("The ledger is empty; there is no head to checkpoint.")
        return Checkpoint.create(
            log=LEDGER_LOG,
            seq=head.seq,
            head=head.hash,
            time=format_time(self._clock()),
            signer=signer,
        )
