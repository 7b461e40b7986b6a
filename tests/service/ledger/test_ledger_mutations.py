"""Every mutation of a 1,000-record ledger is detected, in its export and in its file.

Mutations: single-byte flips (a flip that breaks JSON is caught as a parse error, one
that still parses must fail verification), deletions, insertions of copied or forged
records, swaps, a truncated tail given a later signed checkpoint, records signed by an
unknown key, and (completeness) every truncation, every rollback to an older consistent
state and every timestamp regression, each named by its first affected record.
Verification shares a SignatureCache across trials (a hit needs the exact
key, signature and message, so a mutated record is always verified from scratch).
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.chain import Checkpoint
from service.chain.core import MAX_CLOCK_SKEW_S, parse_utc
from service.chain.tlog import TreeCheckpoint
from service.keys.canonical import canonical_json
from service.keys.store import Signer, TrustStore
from service.ledger import (
    BackendError,
    LedgerIntegrityError,
    SignatureCache,
    open_ledger,
    verify_export,
    verify_export_text,
    verify_records,
)
from service.ledger.records import Record, create_record, record_from_dict
from service.model.metrics import evaluation_document, robust_entry

pytestmark = pytest.mark.slow

RECORDS = 1000
FLIPS = 500
FILE_FLIPS = 100


@dataclass
class Corpus:
    db: Path
    records: list[dict[str, Any]]
    text: bytes
    checkpoint: TreeCheckpoint
    trust: TrustStore
    stranger: Signer
    cache: SignatureCache


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory,
    trainer: Signer,
    approver: Signer,
    auditor: Signer,
    stranger: Signer,
    trust: TrustStore,
) -> Corpus:
    rng = random.Random(1234)
    db = tmp_path_factory.mktemp("mutations") / "ledger.db"
    evaluation = evaluation_document(
        dataset="sklearn-digits/test",
        clean_accuracy=0.97,
        robust=[
            robust_entry(attack="worst-case", epsilon=0.1, steps=100, restarts=10, accuracy=0.81)
        ],
    )
    with open_ledger(db) as ledger:
        n = audit_seq = 0
        while ledger.count() < RECORDS:
            digest = f"sha256:{n:064x}"
            ledger.register(
                signer=trainer,
                name="digits-mlp",
                version=f"1.{n}",
                artifact={"digest": digest, "format": "safetensors", "size": 4096 + n},
                training_data_digest="sha256:" + "d" * 64,
                code_revision=f"rev{n}",
                hyperparameters={"lr": 0.001, "epochs": 30, "batch_size": 64},
                evaluation=evaluation,
            )
            if rng.random() < 0.5:
                ledger.evaluate(digest, evaluation, signer=trainer)
            if rng.random() < 0.6:
                ledger.approve(digest, signer=approver, comment=f"reviewed {n}")
            if rng.random() < 0.1:
                ledger.revoke(digest, signer=approver, reason="superseded")
            if n % 20 == 0:
                audit_seq += rng.randint(1, 50)
                ledger.anchor(
                    Checkpoint.create(
                        log="audit-main",
                        seq=audit_seq,
                        head=f"{n:064x}",
                        time="2026-11-22T10:00:00Z",
                        signer=auditor,
                    ),
                    auditor,
                )
            n += 1
        checkpoint = ledger.checkpoint(approver)
        records = ledger.export(trust)["records"]
    return Corpus(
        db=db,
        records=records,
        text=canonical_json(records),
        checkpoint=checkpoint,
        trust=trust,
        stranger=stranger,
        cache=SignatureCache(),
    )


def _detected(verify: Callable[[], object]) -> bool:
    try:
        verify()
    except (LedgerIntegrityError, BackendError):
        return True
    return False


def _export_detects(corpus: Corpus, records: list[dict[str, Any]]) -> bool:
    return _detected(
        lambda: verify_export(records, corpus.trust, expect=corpus.checkpoint, cache=corpus.cache)
    )


def test_the_intact_corpus_verifies(corpus: Corpus) -> None:
    assert len(corpus.records) >= RECORDS
    verify_export_text(corpus.text, corpus.trust, expect=corpus.checkpoint, cache=corpus.cache)
    with open_ledger(corpus.db, create=False) as ledger:
        ledger.verify(corpus.trust, expect=corpus.checkpoint, cache=corpus.cache)


def test_every_byte_flip_in_the_export_is_detected(corpus: Corpus) -> None:
    rng = random.Random(1)
    parse_errors = verification_errors = 0
    missed = []
    for _ in range(FLIPS):
        data = bytearray(corpus.text)
        at = rng.randrange(len(data))
        data[at] = (data[at] + rng.randrange(1, 256)) % 256
        try:
            verify_export_text(bytes(data), corpus.trust, cache=corpus.cache)
        except LedgerIntegrityError as err:
            # position "export": the text no longer parses; else the first bad record.
            parse_errors += err.position == "export"
            verification_errors += err.position != "export"
        else:
            missed.append(at)
    assert missed == [], f"undetected flips at offsets {missed}"
    assert parse_errors + verification_errors == FLIPS
    assert verification_errors >= FLIPS // 10, "too few flips still parsed to test verification"


def _record_offsets(db: Path, records: list[dict[str, Any]]) -> list[tuple[int, int]]:
    image = db.read_bytes()
    spans = []
    for record in records:
        text = canonical_json(record)
        at = image.find(text)
        if at >= 0:
            spans.append((at, len(text)))
    return spans


def test_every_byte_flip_in_the_sqlite_file_records_is_detected(
    corpus: Corpus, tmp_path: Path
) -> None:
    rng = random.Random(2)
    spans = _record_offsets(corpus.db, corpus.records)
    assert len(spans) >= len(corpus.records) * 0.9
    target = tmp_path / "flipped.db"
    missed = []
    for _ in range(FILE_FLIPS):
        shutil.copyfile(corpus.db, target)
        start, length = rng.choice(spans)
        at = start + rng.randrange(length)
        with target.open("r+b") as handle:
            handle.seek(at)
            old = handle.read(1)[0]
            handle.seek(at)
            handle.write(bytes([(old + rng.randrange(1, 256)) % 256]))

        def verify() -> None:
            with open_ledger(target, create=False) as ledger:
                ledger.verify(corpus.trust, cache=corpus.cache)

        if not _detected(verify):
            missed.append(at)
    assert missed == []


def test_every_deletion_is_detected(corpus: Corpus) -> None:
    rng = random.Random(3)
    for _ in range(40):
        records = list(corpus.records)
        del records[rng.randrange(len(records))]
        assert _export_detects(corpus, records)


def test_every_insertion_of_a_copied_record_is_detected(corpus: Corpus) -> None:
    rng = random.Random(4)
    for _ in range(40):
        records = list(corpus.records)
        records.insert(rng.randrange(len(records) + 1), dict(rng.choice(corpus.records)))
        assert _export_detects(corpus, records)


def test_every_insertion_of_a_forged_record_is_detected(corpus: Corpus) -> None:
    rng = random.Random(5)
    for _ in range(30):
        records = list(corpus.records)
        at = rng.randrange(1, len(records))
        victim = records[at - 1]
        forged = create_record(
            seq=at,
            prev_hash=victim["hash"],
            record_type="approve",
            time=victim["time"],
            model_digest=records[0]["model_digest"],
            payload={"comment": "forged"},
            signer=corpus.stranger,
        )[0].to_dict()
        if rng.random() < 0.5:  # claim a trusted key id
            forged["signer"] = dict(records[at]["signer"])
        records.insert(at, forged)
        assert _export_detects(corpus, records)


def test_every_swap_is_detected(corpus: Corpus) -> None:
    rng = random.Random(6)
    for _ in range(40):
        records = list(corpus.records)
        i, j = rng.sample(range(len(records)), 2)
        records[i], records[j] = records[j], records[i]
        assert _export_detects(corpus, records)


def test_every_truncated_tail_is_detected_with_a_later_checkpoint(corpus: Corpus) -> None:
    rng = random.Random(7)
    for _ in range(10):
        records = corpus.records[: len(corpus.records) - rng.randint(1, 200)]
        verify_export(records, corpus.trust, cache=corpus.cache)  # a clean prefix alone
        assert _export_detects(corpus, records)


def test_every_rechained_suffix_by_an_unknown_key_is_detected(corpus: Corpus) -> None:
    rng = random.Random(8)
    for _ in range(10):
        records = list(corpus.records)
        start = rng.randrange(len(records))
        prev = records[start - 1]["hash"] if start else "0" * 64
        for at in range(start, len(records)):
            old = records[at]
            signer = Signer(old["signer"]["identity"], corpus.stranger.private_key)
            new = create_record(
                seq=at,
                prev_hash=prev,
                record_type=old["type"],
                time=old["time"],
                model_digest=old["model_digest"],
                payload=old["payload"],
                signer=signer,
            )[0]
            records[at], prev = new.to_dict(), new.hash
        with pytest.raises(LedgerIntegrityError, match="unknown key") as caught:
            verify_export(records, corpus.trust, cache=corpus.cache)
        assert caught.value.position == f"seq {start}"


def _sqlite_copy(corpus: Corpus, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(corpus.db, target)
    return target


def _sqlite_detects(corpus: Corpus, db: Path, sql: str, *args: Any) -> bool:
    with sqlite3.connect(db) as conn:
        conn.execute(sql, args)
    conn.close()

    def verify() -> None:
        with open_ledger(db, create=False) as ledger:
            ledger.verify(corpus.trust, expect=corpus.checkpoint, cache=corpus.cache)

    return _detected(verify)


def test_sqlite_deletions_swaps_insertions_and_truncations_are_detected(
    corpus: Corpus, tmp_path: Path
) -> None:
    rng = random.Random(9)
    n = len(corpus.records)
    for trial in range(8):
        db = _sqlite_copy(corpus, tmp_path, f"d{trial}.db")
        assert _sqlite_detects(corpus, db, "DELETE FROM ledger WHERE seq = ?", rng.randrange(n))
        db = _sqlite_copy(corpus, tmp_path, f"t{trial}.db")
        assert _sqlite_detects(corpus, db, "DELETE FROM ledger WHERE seq >= ?", n - 1 - trial)
        db = _sqlite_copy(corpus, tmp_path, f"s{trial}.db")
        i, j = rng.sample(range(n), 2)
        assert _sqlite_detects(
            corpus,
            db,
            "UPDATE ledger SET record = CASE seq WHEN ? THEN (SELECT record FROM ledger WHERE "
            "seq = ?) ELSE (SELECT record FROM ledger WHERE seq = ?) END WHERE seq IN (?, ?)",
            i,
            j,
            i,
            i,
            j,
        )
        db = _sqlite_copy(corpus, tmp_path, f"i{trial}.db")
        copied = corpus.records[rng.randrange(n)]
        assert _sqlite_detects(
            corpus,
            db,
            "INSERT INTO ledger (seq, type, subject, record) VALUES (?, ?, ?, ?)",
            n,
            copied["type"],
            copied["model_digest"],
            canonical_json(copied).decode(),
        )


def test_sqlite_tail_record_by_an_unknown_key_is_detected(corpus: Corpus, tmp_path: Path) -> None:
    db = _sqlite_copy(corpus, tmp_path, "unknown.db")
    head = corpus.records[-1]
    forged = create_record(
        seq=head["seq"] + 1,
        prev_hash=head["hash"],
        record_type="register",
        time=head["time"],
        model_digest="sha256:" + "e" * 64,
        payload={
            **corpus.records[0]["payload"],
            "artifact": {"digest": "sha256:" + "e" * 64, "format": "x", "size": 1},
        },
        signer=corpus.stranger,
    )[0]
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO ledger (seq, type, subject, record) VALUES (?, ?, ?, ?)",
            (forged.seq, forged.type, forged.model_digest, forged.to_json()),
        )
    conn.close()
    with (
        open_ledger(db, create=False) as ledger,
        pytest.raises(LedgerIntegrityError, match="unknown key") as caught,
    ):
        ledger.verify(corpus.trust, cache=corpus.cache)
    assert caught.value.position == f"seq {forged.seq}"


# --- completeness: truncation, rollback and time (the Merkle tree and its checkpoints) ---


def _records(corpus: Corpus) -> list[Record]:
    return [record_from_dict(r) for r in corpus.records]


def _named(position: str, verify: Callable[[], object]) -> bool:
    try:
        verify()
    except LedgerIntegrityError as err:
        return err.position == position
    return False


def test_every_single_record_truncation_is_detected_and_named(corpus: Corpus) -> None:
    records = _records(corpus)
    newest = corpus.checkpoint.text
    missed = [
        k
        for k in range(len(records))
        if not _named(
            f"seq {k}",
            lambda k=k: verify_records(
                records[:k], corpus.trust, checkpoint=newest, cache=corpus.cache
            ),
        )
    ]
    assert missed == [], f"truncations to these lengths were not named: {missed[:20]}"


def test_every_tail_rollback_is_detected_by_the_verifiers_kept_checkpoint(
    corpus: Corpus,
) -> None:
    records = _records(corpus)
    with open_ledger(corpus.db, create=False) as ledger:
        checkpoints = {cp.size: cp for cp in ledger.checkpoints()}
    seen = checkpoints[len(records)]
    missed = []
    for k in range(1, len(records)):
        # An older, internally consistent state: k records and the checkpoint of size k.
        verify_records(
            records[:k], corpus.trust, checkpoint=checkpoints[k].text, cache=corpus.cache
        )
        if not _named(
            f"seq {k}",
            lambda k=k: verify_records(
                records[:k],
                corpus.trust,
                checkpoint=checkpoints[k].text,
                seen=seen,
                cache=corpus.cache,
            ),
        ):
            missed.append(k)
    assert missed == [], f"rollbacks to these lengths were not named: {missed[:20]}"


def test_every_timestamp_regression_is_detected_and_named(
    corpus: Corpus, trainer: Signer, approver: Signer, auditor: Signer
) -> None:
    records = _records(corpus)
    signers = {s.key_id: s for s in (trainer, approver, auditor)}
    newest = parse_utc(records[0].time)
    missed = []
    for k in range(1, len(records)):
        newest = max(newest, parse_utc(records[k - 1].time))
        old = records[k]
        back = newest - timedelta(seconds=MAX_CLOCK_SKEW_S + 1)
        regressed = create_record(
            seq=k,
            prev_hash=old.prev_hash,
            record_type=old.type,
            time=back.strftime("%Y-%m-%dT%H:%M:%SZ"),
            model_digest=old.model_digest,
            payload=old.payload,
            signer=Signer(old.identity, signers[old.key_id].private_key),
        )[0]
        mutated = [*records[:k], regressed, *records[k + 1 :]]
        if not _named(
            f"seq {k}", lambda m=mutated: verify_records(m, corpus.trust, cache=corpus.cache)
        ):
            missed.append(k)
    assert missed == [], f"time regressions at these records were not named: {missed[:20]}"


def test_a_shortened_ledger_never_verifies_as_complete_past_its_last_checkpoint(
    corpus: Corpus, tmp_path: Path
) -> None:
    rng = random.Random(10)
    n = len(corpus.records)
    for trial in range(12):
        db = _sqlite_copy(corpus, tmp_path, f"short{trial}.db")
        keep = rng.randrange(1, n)
        last_checkpoint = rng.randint(1, keep)
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM ledger WHERE seq >= ?", (keep,))
            if trial % 3:  # and the checkpoints that vouched for the cut-off records
                conn.execute("DELETE FROM ledger_checkpoints WHERE size > ?", (last_checkpoint,))
        conn.close()
        with open_ledger(db, create=False) as ledger:
            if trial % 3 == 0:  # checkpoints beyond the records remain: truncation named
                with pytest.raises(LedgerIntegrityError, match="truncated") as caught:
                    ledger.verify(corpus.trust, cache=corpus.cache)
                assert caught.value.position == f"seq {keep}"
                continue
            report = ledger.verify(corpus.trust, cache=corpus.cache)
        assert report.tree.proven_seq == last_checkpoint - 1
        assert report.unproven == keep - last_checkpoint
