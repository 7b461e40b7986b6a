"""Event rules enforced when a record is appended."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.chain import Checkpoint
from service.keys.store import Signer
from service.ledger import (
    AnchorError,
    DuplicateRegistrationError,
    Ledger,
    NotRegisteredError,
    RecordSchemaError,
    RevokedError,
    SeparationOfDutiesError,
)

UNKNOWN = "sha256:" + "f" * 64


def test_evaluate_of_unregistered_digest_is_refused(
    ledger: Ledger, trainer: Signer, evaluation: dict[str, Any]
) -> None:
    with pytest.raises(NotRegisteredError, match="not registered"):
        ledger.evaluate(UNKNOWN, evaluation, signer=trainer)


def test_approve_of_unregistered_digest_is_refused(ledger: Ledger, approver: Signer) -> None:
    with pytest.raises(NotRegisteredError):
        ledger.approve(UNKNOWN, signer=approver)


def test_revoke_of_unregistered_digest_is_refused(ledger: Ledger, approver: Signer) -> None:
    with pytest.raises(NotRegisteredError):
        ledger.revoke(UNKNOWN, signer=approver, reason="x")


def test_double_registration_is_refused(ledger: Ledger, register: Any) -> None:
    register(1)
    with pytest.raises(DuplicateRegistrationError, match="already registered"):
        register(1, version="other-label")


def test_approve_by_trainer_key_is_refused(
    ledger: Ledger, register: Any, trainer: Signer, digest_of: Any
) -> None:
    register(1)
    same_key = Signer("someone-else@test", trainer.private_key)
    with pytest.raises(SeparationOfDutiesError, match="cannot be approved"):
        ledger.approve(digest_of(1), signer=same_key)


def test_approve_by_trainer_identity_is_refused(
    ledger: Ledger, register: Any, trainer: Signer, digest_of: Any
) -> None:
    register(1)
    other_key = Signer(trainer.identity, Ed25519PrivateKey.generate())
    with pytest.raises(SeparationOfDutiesError):
        ledger.approve(digest_of(1), signer=other_key)


def test_approve_after_revoke_is_refused(
    ledger: Ledger, register: Any, approver: Signer, digest_of: Any
) -> None:
    register(1)
    ledger.revoke(digest_of(1), signer=approver, reason="backdoor found")
    with pytest.raises(RevokedError, match="revoked"):
        ledger.approve(digest_of(1), signer=approver)


def test_second_revoke_is_refused(
    ledger: Ledger, register: Any, approver: Signer, digest_of: Any
) -> None:
    register(1)
    ledger.revoke(digest_of(1), signer=approver, reason="a")
    with pytest.raises(RevokedError):
        ledger.revoke(digest_of(1), signer=approver, reason="b")


def test_refused_event_appends_nothing(ledger: Ledger, register: Any, trainer: Signer) -> None:
    register(1)
    with pytest.raises(SeparationOfDutiesError):
        ledger.approve(register(2).model_digest or "", signer=trainer)
    assert ledger.count() == 2


def test_status_follows_events(
    ledger: Ledger,
    register: Any,
    approver: Signer,
    trainer: Signer,
    digest_of: Any,
    evaluation: dict[str, Any],
) -> None:
    register(1)
    assert ledger.model(digest_of(1)).status == "registered"
    ledger.evaluate(digest_of(1), evaluation, signer=trainer)
    ledger.approve(digest_of(1), signer=approver, comment="ok")
    assert ledger.model(digest_of(1)).status == "approved"
    ledger.revoke(digest_of(1), signer=approver, reason="stale")
    state = ledger.model(digest_of(1))
    assert (state.status, len(state.evaluations), len(state.approvals)) == ("revoked", 2, 1)


def test_records_are_linked_in_order(ledger: Ledger, register: Any) -> None:
    first, second = register(1), register(2)
    assert (first.seq, second.seq, second.prev_hash) == (0, 1, first.hash)
    assert first.prev_hash == "0" * 64


def test_malformed_evaluation_is_refused(ledger: Ledger, register: Any) -> None:
    with pytest.raises(RecordSchemaError, match="clean_accuracy"):
        register(1, evaluation={"clean_accuracy": 1.7, "robust": []})


def test_malformed_digest_is_refused(ledger: Ledger, register: Any) -> None:
    with pytest.raises(RecordSchemaError, match="sha256"):
        register(1, artifact={"digest": "md5:abc", "format": "safetensors", "size": 1})


def test_unique_prefix_resolves_to_digest(ledger: Ledger, register: Any, digest_of: Any) -> None:
    register(0xABCDEF12)
    assert ledger.resolve(digest_of(0xABCDEF12)[:20]) == digest_of(0xABCDEF12)


def test_unknown_prefix_is_not_registered(ledger: Ledger, register: Any) -> None:
    register(1)
    with pytest.raises(NotRegisteredError):
        ledger.resolve("sha256:ffffffff")


def _checkpoint(signer: Signer, seq: int, head: str, log: str = "audit-a") -> Checkpoint:
    return Checkpoint.create(
        log=log, seq=seq, head=head, time="2026-11-22T10:00:00Z", signer=signer
    )


def test_anchors_are_returned_per_log(ledger: Ledger, auditor: Signer) -> None:
    first = _checkpoint(auditor, 10, "a" * 64)
    ledger.anchor(first, auditor)
    ledger.anchor(_checkpoint(auditor, 3, "b" * 64, log="audit-b"), auditor)
    second = _checkpoint(auditor, 20, "c" * 64)
    record = ledger.anchor(second, auditor)
    assert record.type == "anchor" and record.model_digest is None
    assert ledger.anchors("audit-a") == [first, second]


def test_anchor_going_back_is_refused(ledger: Ledger, auditor: Signer) -> None:
    ledger.anchor(_checkpoint(auditor, 10, "a" * 64), auditor)
    with pytest.raises(AnchorError, match="went back"):
        ledger.anchor(_checkpoint(auditor, 9, "b" * 64), auditor)


def test_anchor_fork_is_refused(ledger: Ledger, auditor: Signer) -> None:
    ledger.anchor(_checkpoint(auditor, 10, "a" * 64), auditor)
    with pytest.raises(AnchorError, match="forked"):
        ledger.anchor(_checkpoint(auditor, 10, "b" * 64), auditor)
