"""The provenance ledger: one signed, hash-linked record per model event.

Models are identified by the SHA-256 digest of their artifact; names and versions are
labels. Each append checks the event rules inside the storage backend's append lock, so
they hold under concurrent writers too, and signs a checkpoint of the ledger's Merkle
tree with the new record in the same transaction (:mod:`service.ledger.checkpoints`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from service.chain.core import GENESIS_HASH, MAX_CLOCK_SKEW_S, Checkpoint, parse_utc
from service.chain.errors import NoteError, ProofError
from service.chain.merkle import Frontier, leaf_hash
from service.chain.note import Verifier
from service.chain.seen import SeenCheckpoints
from service.chain.tlog import LogCheckpoint, TreeCheckpoint, checkpoint_from_dict, ledger_origin
from service.keys.store import Signer, TrustStore
from service.ledger.checkpoints import (
    Prover,
    TreeCheck,
    next_checkpoint,
    parse_checkpoint,
    record_leaf,
)
from service.ledger.errors import (
    LedgerError,
    LedgerIntegrityError,
    NotRegisteredError,
    RecordSchemaError,
)
from service.ledger.records import (
    Record,
    create_record,
    encode_payload,
    record_from_json,
)
from service.ledger.rules import (
    ModelState,
    anchor_subject,
    apply_anchor,
    apply_model_event,
    subject_of,
)
from service.ledger.schema import DIGEST_RE, check_payload
from service.ledger.storage import AppendView, Backend, CheckpointRow, Row
from service.ledger.verify import (
    ChainVerifier,
    ExpectedHead,
    SignatureCache,
    VerifyReport,
    verify_records,
)

Clock = Callable[[], datetime]


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` suffix, to the second."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


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


def _check_clock(head: Record, time: str) -> None:
    """Refuse a record whose time is more than the clock skew before the head's.

    Raises:
        LedgerError: this writer's clock is behind (named, with both times).
    """
    if head.time == time:
        return
    behind = (parse_utc(head.time) - parse_utc(time)).total_seconds()
    if behind > MAX_CLOCK_SKEW_S:
        raise LedgerError(
            f"This host's clock says {time}, {behind:.0f} s before the ledger's head (seq "
            f"{head.seq}, {head.time}); time may not go back more than {MAX_CLOCK_SKEW_S} s "
            "within the ledger. Fix this host's clock (NTP) and retry."
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
        self._head: tuple[str, Record] | None = None

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
        check_payload(record_type, model_digest, payload)
        # The record holds the payload as it is read back from the stored text, never
        # the caller's object.
        encoded, payload = encode_payload(payload)
        subject = subject_of(record_type, model_digest, payload)
        time = format_time(self._clock())
        built: list[tuple[Record, str]] = []

        def build(view: AppendView) -> tuple[Row, CheckpointRow]:
            head = view.head()
            seq, prev = (0, GENESIS_HASH)
            if head is not None:
                head_record = self._parse_head(head)
                seq, prev = head_record.seq + 1, head_record.hash
                _check_clock(head_record, time)
            record, text = create_record(
                seq=seq,
                prev_hash=prev,
                record_type=record_type,
                time=time,
                model_digest=model_digest,
                payload=payload,
                signer=signer,
                encoded_payload=encoded,
            )
            _check_rules(view, subject, record)
            checkpoint = next_checkpoint(view, record, signer, leaf=text.encode())
            built.append((record, text))
            return Row(seq=seq, type=record_type, subject=subject, record=text), checkpoint

        self.backend.append(build, subject=subject)
        record, text = built[-1]
        self._head = (text, record)
        return record

    def _parse_head(self, row: Row) -> Record:
        """Parse the head row, or take the record this ledger wrote there if it is that one.

        The stored text is compared whole, so the record is exactly the text's parse.
        """
        last = self._head
        if last is not None and row.seq == last[1].seq and row.record == last[0]:
            return last[1]
        return _parse_row(row)

    def import_records(
        self, records: Sequence[Record], trust: TrustStore, *, checkpoint: str | None = None
    ) -> int:
        """Append records signed elsewhere (a verified export), stored unchanged.

        The export's signed ``checkpoint`` (a note of the same ledger) is verified against
        the records and stored too, so the imported records stay proven.

        The records must form a whole chain from seq 0 that verifies against ``trust``
        (hashes, signatures, schema, event rules), and they and this ledger must agree
        where both have a record (same hashes; either may be longer). Each missing
        record is appended inside the
        backend's append lock, where it must link to the current head and obey the event
        rules given its subject's stored history, exactly as a new record would.

        Args:
            records: The chain to import, in order (e.g. from ``verified_export_records``).
            trust: Keys trusted to sign records.
            checkpoint: The export's newest signed checkpoint note, stored when it
                verifies against the records.

        Returns:
            How many records were appended (0 when the ledger already holds them all).

        Raises:
            LedgerIntegrityError: the records do not verify, the ledger diverges from them,
                or another writer moved the head meanwhile.
        """
        verify_records(records, trust, checkpoint=checkpoint)
        existing = 0
        for stored in self.records():
            if existing == len(records):
                self._store_imported(checkpoint)
                return 0  # the ledger already holds them all, and later records
            if records[existing].hash != stored.hash:
                raise LedgerIntegrityError(
                    f"seq {stored.seq}",
                    f"the ledger at {self.url} diverges from the records to import; "
                    "refusing to import",
                )
            existing += 1
        for record in records[existing:]:

            def build(
                view: AppendView, record: Record = record
            ) -> tuple[Row, CheckpointRow | None]:
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
                row = Row(seq=seq, type=record.type, subject=subject, record=record.to_json())
                return row, None

            self.backend.append(build)
        self._store_imported(checkpoint)
        return len(records) - existing

    def _store_imported(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        parsed = parse_checkpoint(checkpoint, "checkpoint")
        stored = self.backend.latest_checkpoint()
        if stored is not None and stored.size >= parsed.size:
            return
        self._store(parsed)

    def _store(self, checkpoint: TreeCheckpoint) -> None:
        """Store a checkpoint after checking it against the stored records.

        Raises:
            LedgerIntegrityError: its root is not the root of the records up to its size.
        """
        frontier = Frontier()
        for record in self.records():
            if frontier.size == checkpoint.size:
                break
            frontier = frontier.append(leaf_hash(record_leaf(record)))
        if frontier.size != checkpoint.size or frontier.root() != checkpoint.root:
            raise LedgerIntegrityError(
                f"checkpoint of size {checkpoint.size}",
                f"does not match the records of the ledger at {self.url}; not stored",
            )
        self.backend.put_checkpoint(
            CheckpointRow(checkpoint.size, checkpoint.text, frontier.to_text())
        )

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
        contract: dict[str, Any] | None = None,
        calibration: dict[str, Any] | None = None,
        serving: dict[str, Any] | None = None,
    ) -> Record:
        """Register a model by its artifact digest (``artifact``: digest, format, size).

        ``oms_bundle`` (``{"digest", "key_hint"}``) records the OMS bundle that verified
        the model at registration; ``contract`` (``{"digest", "document"}``) the model's
        contract; ``calibration`` its detector calibration; ``serving`` its tenant, risk
        tier, batch limit and whether it explains. A record without them is still valid.

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
        optional = {
            "oms_bundle": oms_bundle,
            "contract": contract,
            "calibration": calibration,
            "serving": serving,
        }
        payload.update({key: value for key, value in optional.items() if value is not None})
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

    def anchor(self, checkpoint: Checkpoint | LogCheckpoint, signer: Signer) -> Record:
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

    def anchors(self, log: str) -> list[Checkpoint | LogCheckpoint]:
        """The audit checkpoints anchored for audit log ``log``, oldest first."""
        return [
            checkpoint_from_dict(_parse_row(row).payload)
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

    # --- checkpoints and proofs ------------------------------------------------------

    def origin(self) -> str | None:
        """The ledger's origin (from record 0), or None while it is empty."""
        first = next(self.records(), None)
        return None if first is None else ledger_origin(first.hash)

    def checkpoints(self) -> list[TreeCheckpoint]:
        """Every stored signed checkpoint, by tree size (parsed, not verified).

        Raises:
            LedgerIntegrityError: a stored checkpoint is malformed.
        """
        return [
            parse_checkpoint(row.note, f"checkpoint of size {row.size}")
            for row in self.backend.checkpoints()
        ]

    def newest_checkpoint(self, *, witnesses: Sequence[Verifier] = ()) -> str | None:
        """The newest stored checkpoint note (with ``witnesses``: validly cosigned by them all).

        Only the witnesses' cosignatures are checked here; whoever relies on the note
        verifies it whole.
        """
        if not witnesses:
            latest = self.backend.latest_checkpoint()
            return None if latest is None else latest.note
        for row in reversed(self.backend.checkpoints()):
            if not all(f"\n— {w.name} " in row.note for w in witnesses):
                continue
            try:
                parse_checkpoint(row.note, "checkpoint").verify_witnesses(witnesses)
            except (LedgerIntegrityError, NoteError):
                continue
            return row.note
        return None

    def _relied_upon(self, witnesses: Sequence[Verifier]) -> str | None:
        """The newest checkpoint every witness cosigned, else the newest one.

        When no checkpoint carries all the cosignatures, verifying the newest one names
        the witnesses that are missing.
        """
        return self.newest_checkpoint(witnesses=witnesses) or self.newest_checkpoint()

    def checkpoint_at(self, size: int | None = None) -> TreeCheckpoint:
        """The stored checkpoint of tree ``size`` (default: the newest).

        Raises:
            LedgerError: there is none.
        """
        rows = self.backend.checkpoints()
        found = [r for r in rows if size is None or r.size == size]
        if not found:
            sizes = ", ".join(str(r.size) for r in rows[-5:]) or "none"
            raise LedgerError(
                f"No signed checkpoint of size {size if size is not None else '(any)'} in "
                f"{self.url} (newest sizes: {sizes}); `ztml ledger checkpoint` signs one."
            )
        row = found[-1]
        return parse_checkpoint(row.note, f"checkpoint of size {row.size}")

    def checkpoint(self, signer: Signer) -> TreeCheckpoint:
        """Sign and store a checkpoint of the whole ledger (kept if one exists already).

        Raises:
            LedgerError: the ledger is empty.
        """
        count = self.count()
        if count == 0:
            raise LedgerError("The ledger is empty; there is no tree to checkpoint.")
        latest = self.backend.latest_checkpoint()
        if latest is not None and latest.size == count:
            return parse_checkpoint(latest.note, f"checkpoint of size {latest.size}")
        records = list(self.records())
        frontier = Frontier.of(leaf_hash(record_leaf(r)) for r in records)
        signed = TreeCheckpoint.create(
            origin=ledger_origin(records[0].hash),
            size=frontier.size,
            root=frontier.root(),
            signer=signer,
        )
        self.backend.put_checkpoint(CheckpointRow(signed.size, signed.text, frontier.to_text()))
        return signed

    def cosign(
        self,
        *,
        name: str,
        signer: Signer,
        trust: TrustStore,
        seen: SeenCheckpoints,
        timestamp: int,
    ) -> TreeCheckpoint:
        """Witness the newest checkpoint: verify, check consistency, add a cosignature.

        The witness verifies the whole ledger against the checkpoint and against the
        newest checkpoint it cosigned before (kept in ``seen``), so it never cosigns a
        tree that does not extend what it saw; then it stores the cosigned note.

        Raises:
            LedgerIntegrityError: the ledger does not verify or went back.
            LedgerError: there is no checkpoint to cosign.
        """
        report = self.verify(trust, seen=seen)
        newest = report.tree.checkpoint
        if newest is None:
            raise LedgerError(f"No signed checkpoint in {self.url} to cosign.")
        try:
            cosigned = newest.cosigned(name=name, signer=signer, timestamp=timestamp)
        except NoteError as err:
            raise LedgerError(f"Cannot cosign: {err}") from None
        self.backend.put_checkpoint(
            CheckpointRow(
                cosigned.size,
                cosigned.text,
                Frontier.of(leaf_hash(record_leaf(r)) for r in self.records()).to_text()
                if cosigned.size == self.count()
                else self._frontier_at(cosigned.size),
            )
        )
        seen.remember(cosigned)
        return cosigned

    def _frontier_at(self, size: int) -> str:
        frontier = Frontier()
        for record in self.records():
            if frontier.size == size:
                break
            frontier = frontier.append(leaf_hash(record_leaf(record)))
        return frontier.to_text()

    def prove_inclusion(self, seq: int, *, size: int | None = None) -> dict[str, Any]:
        """The inclusion proof of record ``seq`` in the checkpoint of ``size`` (default newest).

        Raises:
            LedgerError: no such checkpoint, or ``seq`` is not covered by it.
        """
        checkpoint = self.checkpoint_at(size)
        return Prover(list(self.records())).inclusion(checkpoint, seq)

    def prove_consistency(self, old: int, new: int | None = None) -> dict[str, Any]:
        """The consistency proof from tree size ``old`` to the checkpoint of ``new``.

        The old side is the stored checkpoint of that size when there is one, else the
        tree's root at that size.

        Raises:
            LedgerError: no checkpoint of size ``new``, or the sizes are out of order.
        """
        checkpoint = self.checkpoint_at(new)
        stored = {row.size: row for row in self.backend.checkpoints()}
        old_side: TreeCheckpoint | int = old
        if old in stored:
            old_side = parse_checkpoint(stored[old].note, f"checkpoint of size {old}")
        return Prover(list(self.records())).consistency(old_side, checkpoint)

    def upgrade(self, signer: Signer, trust: TrustStore) -> TreeCheckpoint:
        """Bring a ledger of an earlier version up to date: verify it, then checkpoint it.

        Nothing is rewritten: the records stay as they are (hashes and signatures
        unchanged); the checkpoints table is created and a checkpoint of every record is
        signed, so the whole ledger is proven from then on.

        Raises:
            LedgerIntegrityError: the ledger does not verify (nothing is changed).
            LedgerError: the ledger is empty.
        """
        self.verify(trust)
        return self.checkpoint(signer)

    # --- verification --------------------------------------------------------------

    def _verified_records(
        self,
        trust: TrustStore,
        *,
        expect: Checkpoint | TreeCheckpoint | ExpectedHead | None,
        cache: SignatureCache | None,
        progress: Callable[[int], None] | None,
        keep: bool,
        seen: SeenCheckpoints | None = None,
        witnesses: Sequence[Verifier] = (),
    ) -> tuple[VerifyReport, list[Record]]:
        claimed = self._relied_upon(witnesses)
        origin = self.origin()
        try:
            remembered = None if seen is None or origin is None else seen.get(origin)
        except NoteError as err:
            raise LedgerIntegrityError("verifier state", str(err)) from None
        tree = TreeCheck(trust, claimed=claimed, seen=remembered, witnesses=witnesses)
        verifier = ChainVerifier(trust, expect=expect, cache=cache, tree=tree)
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
        report = verifier.finish()
        if seen is not None and report.tree.checkpoint is not None:
            try:
                seen.remember(report.tree.checkpoint)
            except (NoteError, ProofError) as err:
                raise LedgerIntegrityError("verifier state", str(err)) from None
        return report, kept

    def verify(
        self,
        trust: TrustStore,
        *,
        expect: Checkpoint | TreeCheckpoint | ExpectedHead | None = None,
        cache: SignatureCache | None = None,
        progress: Callable[[int], None] | None = None,
        seen: SeenCheckpoints | None = None,
        witnesses: Sequence[Verifier] = (),
    ) -> VerifyReport:
        """Verify the whole chain and how far its signed checkpoints prove it complete.

        Args:
            trust: keys trusted to sign records and checkpoints.
            expect: a checkpoint or expected head the ledger must reach.
            cache: optional signature cache for repeated verification.
            progress: called with 1 after each verified record.
            seen: this verifier's kept checkpoints: the ledger must be consistent with
                the one kept for it (else it was cut off, rolled back or rewritten), and
                the newest checkpoint verified here is kept for next time.
            witnesses: witnesses that must have cosigned the checkpoint relied upon.

        Raises:
            LedgerIntegrityError: names the first bad record and what is wrong.
        """
        report, _ = self._verified_records(
            trust,
            expect=expect,
            cache=cache,
            progress=progress,
            keep=False,
            seen=seen,
            witnesses=witnesses,
        )
        return report

    def export(
        self,
        trust: TrustStore | None = None,
        *,
        expect: Checkpoint | TreeCheckpoint | ExpectedHead | None = None,
        progress: Callable[[int], None] | None = None,
        seen: SeenCheckpoints | None = None,
        witnesses: Sequence[Verifier] = (),
    ) -> dict[str, Any]:
        """Return ``{"verified", "records", "checkpoint"}`` (records in exported form).

        ``verified`` is true only when ``trust`` was given and every exported record was
        verified in the same pass that read it. ``checkpoint`` is the ledger's newest
        signed checkpoint note (with ``witnesses``: the newest cosigned by them all, if
        any is; verified against the records when ``trust`` is given), so whoever reads
        the export can require it to cover what they rely on.

        Raises:
            LedgerIntegrityError: ``trust`` was given and verification failed.
        """
        if trust is None:
            return {
                "verified": False,
                "records": [r.to_dict() for r in self.records()],
                "checkpoint": self._relied_upon(witnesses),
            }
        report, records = self._verified_records(
            trust,
            expect=expect,
            cache=None,
            progress=progress,
            keep=True,
            seen=seen,
            witnesses=witnesses,
        )
        newest = report.tree.checkpoint
        return {
            "verified": True,
            "records": [r.to_dict() for r in records],
            "checkpoint": None if newest is None else newest.text,
        }
