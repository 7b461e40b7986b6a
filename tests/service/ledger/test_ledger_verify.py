"""Verification names the first bad record and what is wrong with it."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from service.chain import Checkpoint
from service.chain.tlog import TreeCheckpoint
from service.keys.store import Signer, TrustStore
from service.ledger import (
    ExpectedHead,
    Ledger,
    LedgerIntegrityError,
    verify_export,
)
from service.ledger.records import create_record


def _populate(ledger: Ledger, register: Any, approver: Signer, digest_of: Any) -> None:
    for n in range(4):
        register(n)
    ledger.approve(digest_of(1), signer=approver, comment="fine")
    ledger.revoke(digest_of(2), signer=approver, reason="leak")


def _db(ledger: Ledger) -> Path:
    return Path(ledger.url)


def _edit(ledger: Ledger, sql: str, *args: Any) -> None:
    with sqlite3.connect(_db(ledger)) as conn:
        conn.execute(sql, args)


def test_intact_ledger_verifies(
    ledger: Ledger, register: Any, approver: Signer, digest_of: Any, trust: TrustStore
) -> None:
    _populate(ledger, register, approver, digest_of)
    report = ledger.verify(trust)
    assert (report.count, report.head_seq) == (6, 5)
    assert report.models[digest_of(1)] == "approved"
    assert report.models[digest_of(2)] == "revoked"


def test_empty_ledger_verifies(ledger: Ledger, trust: TrustStore) -> None:
    assert ledger.verify(trust).count == 0


def test_record_by_unknown_key_is_named(
    ledger: Ledger, register: Any, stranger: Signer, trust: TrustStore, register_model: Any
) -> None:
    register(0)
    register_model(ledger, stranger, 1)
    with pytest.raises(LedgerIntegrityError, match="unknown key") as caught:
        ledger.verify(trust)
    assert caught.value.position == "seq 1" and stranger.key_id in caught.value.reason


def test_altered_payload_names_its_seq(
    ledger: Ledger, register: Any, approver: Signer, digest_of: Any, trust: TrustStore
) -> None:
    _populate(ledger, register, approver, digest_of)
    _edit(ledger, "UPDATE ledger SET record = replace(record, '\"leak\"', '\"ok\"') WHERE seq = 5")
    with pytest.raises(LedgerIntegrityError, match="hash mismatch") as caught:
        ledger.verify(trust)
    assert caught.value.position == "seq 5"


def test_deleted_record_breaks_the_chain(
    ledger: Ledger, register: Any, approver: Signer, digest_of: Any, trust: TrustStore
) -> None:
    _populate(ledger, register, approver, digest_of)
    _edit(ledger, "DELETE FROM ledger WHERE seq = 2")
    with pytest.raises(LedgerIntegrityError, match="expected seq 2 but found seq 3"):
        ledger.verify(trust)


def test_rehashed_record_fails_its_signature(
    ledger: Ledger, register: Any, trust: TrustStore, trainer: Signer
) -> None:
    record = register(0)
    forged = create_record(
        seq=0,
        prev_hash=record.prev_hash,
        record_type="register",
        time=record.time,
        model_digest=record.model_digest,
        payload={**record.payload, "code_revision": "evil"},
        signer=Signer(trainer.identity, trainer.private_key),
    )[0]
    document = forged.to_dict()
    document["signature"] = record.signature
    with pytest.raises(LedgerIntegrityError, match="does not verify"):
        verify_export([document], trust)


def test_non_canonical_signature_encoding_is_rejected(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    document = register(0).to_dict()
    raw = base64.b64decode(document["signature"])
    # 64 bytes leave 2 unused bits in the last base64 digit: set them.
    text = base64.b64encode(raw).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[-3])
    document["signature"] = text[:-3] + alphabet[last | 1 if last % 2 == 0 else last - 1] + "=="
    assert base64.b64decode(document["signature"]) == raw
    with pytest.raises(LedgerIntegrityError, match="canonical base64"):
        verify_export([document], trust)


def test_rule_breaking_chain_is_rejected(trainer: Signer, trust: TrustStore) -> None:
    approve = create_record(
        seq=0,
        prev_hash="0" * 64,
        record_type="approve",
        time="2026-11-22T10:00:00Z",
        model_digest="sha256:" + "e" * 64,
        payload={"comment": ""},
        signer=trainer,
    )[0]
    with pytest.raises(LedgerIntegrityError, match=r"breaks a ledger rule.*not registered"):
        verify_export([approve.to_dict()], trust)


def test_truncation_is_detected_with_a_later_checkpoint(
    ledger: Ledger, register: Any, approver: Signer, digest_of: Any, trust: TrustStore
) -> None:
    _populate(ledger, register, approver, digest_of)
    checkpoint = ledger.checkpoint(approver)
    _edit(ledger, "DELETE FROM ledger WHERE seq >= 4")
    _edit(ledger, "DELETE FROM ledger_checkpoints WHERE size > 4")
    ledger.verify(trust)  # a clean prefix with its own checkpoints
    with pytest.raises(LedgerIntegrityError, match="truncated") as caught:
        ledger.verify(trust, expect=checkpoint)
    assert caught.value.position == "seq 4"


def test_truncation_is_detected_by_the_stored_checkpoints(
    ledger: Ledger, register: Any, approver: Signer, digest_of: Any, trust: TrustStore
) -> None:
    _populate(ledger, register, approver, digest_of)
    _edit(ledger, "DELETE FROM ledger WHERE seq >= 4")
    with pytest.raises(LedgerIntegrityError, match="truncated") as caught:
        ledger.verify(trust)
    assert caught.value.position == "seq 4"


def test_rewrite_is_detected_by_the_checkpoint_head(
    ledger: Ledger, register: Any, approver: Signer, digest_of: Any, trust: TrustStore
) -> None:
    register(0)
    checkpoint = ledger.checkpoint(approver)
    _edit(ledger, "DELETE FROM ledger")
    _edit(ledger, "DELETE FROM ledger_checkpoints")
    register(5)
    with pytest.raises(LedgerIntegrityError, match="not this ledger's"):
        ledger.verify(trust, expect=checkpoint)


def test_appending_after_a_cut_off_tail_is_refused(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    register(0)
    register(1)
    _edit(ledger, "DELETE FROM ledger WHERE seq = 1")
    with pytest.raises(LedgerIntegrityError, match="cut off"):
        register(2)


def test_expected_head_reached_is_reported(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    record = register(0)
    register(1)
    report = ledger.verify(trust, expect=ExpectedHead(record.seq, record.hash))
    assert report.checked_head is not None


def test_checkpoint_by_untrusted_key_is_rejected(
    ledger: Ledger, register: Any, stranger: Signer, trust: TrustStore
) -> None:
    register(0)
    genuine = ledger.checkpoint_at()
    forged = TreeCheckpoint.create(
        origin=genuine.origin, size=genuine.size, root=genuine.root, signer=stranger
    )
    with pytest.raises(LedgerIntegrityError, match="checkpoint"):
        ledger.verify(trust, expect=forged)


def test_anchor_with_bad_checkpoint_signature_is_rejected(
    ledger: Ledger, auditor: Signer, trust: TrustStore
) -> None:
    good = Checkpoint.create(
        log="audit-a", seq=1, head="a" * 64, time="2026-11-22T10:00:00Z", signer=auditor
    )
    tampered = Checkpoint(**{**good.to_dict(), "head": "b" * 64})
    ledger.anchor(tampered, auditor)
    with pytest.raises(LedgerIntegrityError, match="anchored checkpoint"):
        ledger.verify(trust)


def test_index_columns_must_match_the_record(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    register(0)
    _edit(ledger, "UPDATE ledger SET subject = 'sha256:' || hex(randomblob(32))")
    with pytest.raises(LedgerIntegrityError, match="index columns"):
        ledger.verify(trust)


def test_export_is_verified_only_with_trust(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    register(0)
    assert ledger.export()["verified"] is False
    exported = ledger.export(trust)
    assert exported["verified"] is True
    assert set(exported["records"][0]) == {
        "seq",
        "type",
        "time",
        "model_digest",
        "signer",
        "payload",
        "prev_hash",
        "hash",
        "signature",
    }
    assert verify_export(exported, trust).count == 1


def test_signed_record_with_a_malformed_payload_is_rejected(
    trainer: Signer, trust: TrustStore
) -> None:
    digest = "sha256:" + "e" * 64
    bad = create_record(
        seq=0,
        prev_hash="0" * 64,
        record_type="register",
        time="2026-11-22T10:00:00Z",
        model_digest=digest,
        payload={"name": "m", "version": "1"},
        signer=trainer,
    )[0]
    with pytest.raises(LedgerIntegrityError, match=r"invalid register record.*missing"):
        verify_export([bad.to_dict()], trust)


def test_unknown_record_type_is_rejected(ledger: Ledger, register: Any, trust: TrustStore) -> None:
    document = register(0).to_dict()
    document["type"] = "delete"
    with pytest.raises(LedgerIntegrityError, match="unknown record type"):
        verify_export([document], trust)
