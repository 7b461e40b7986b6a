"""Event rules: what may follow what for one model digest or one anchored audit log.

The same rules guard appends (inside the append transaction) and verification (replayed
over the whole chain), so a ledger written by another tool is held to them too:

- evaluate, approve and revoke need a registered digest;
- a digest is registered at most once;
- nothing but reading follows a revoke (no approve, evaluate or second revoke);
- an approval is refused when its signer's key id or identity is the registering
  trainer's (separation of duties);
- audit checkpoints anchored for one log never go back in sequence and never fork
  (same sequence with another head).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from service.chain.tlog import LogCheckpoint
from service.ledger.errors import (
    AnchorError,
    DuplicateRegistrationError,
    NotRegisteredError,
    RevokedError,
    SeparationOfDutiesError,
)
from service.ledger.records import Record

ModelStatus = Literal["registered", "approved", "revoked"]


@dataclass
class ModelState:
    """What the ledger says about one model digest."""

    digest: str
    register: Record
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[Record] = field(default_factory=list)
    revocation: Record | None = None

    @property
    def name(self) -> str:
        """The model's name label."""
        return str(self.register.payload["name"])

    @property
    def version(self) -> str:
        """The model's version label."""
        return str(self.register.payload["version"])

    @property
    def status(self) -> ModelStatus:
        """``revoked`` beats ``approved`` beats ``registered``."""
        if self.revocation is not None:
            return "revoked"
        return "approved" if self.approvals else "registered"


def anchor_subject(log: str) -> str:
    """The subject key under which anchors of audit log ``log`` are indexed."""
    return f"anchor:{log}"


def subject_of(record_type: str, model_digest: str | None, payload: dict[str, Any]) -> str:
    """The subject a record is indexed under: its model digest or its anchored log."""
    if record_type == "anchor":
        return anchor_subject(str(payload["log"]))
    return str(model_digest)


def apply_model_event(state: ModelState | None, record: Record) -> ModelState:
    """Apply a model event to the digest's state, enforcing the rules.

    Raises:
        NotRegisteredError, DuplicateRegistrationError, RevokedError,
        SeparationOfDutiesError: the event breaks a rule.
    """
    digest = str(record.model_digest)
    if record.type == "register":
        if state is not None:
            raise DuplicateRegistrationError(
                f"Model {digest} is already registered (seq {state.register.seq}, "
                f"{state.name} {state.version}); a digest is registered once. "
                "Record new results with `evaluate` instead."
            )
        return ModelState(
            digest=digest, register=record, evaluations=[record.payload["evaluation"]]
        )
    if state is None:
        raise NotRegisteredError(
            f"Model {digest} is not registered; {record.type} needs a register record "
            "first. Register it with `ztml ledger register ARTIFACT --metrics FILE`."
        )
    if state.revocation is not None:
        raise RevokedError(
            f"Model {digest} was revoked at seq {state.revocation.seq} "
            f"({state.revocation.payload['reason']!r}); it cannot be {record.type}d any more. "
            "Register a new model instead."
        )
    if record.type == "evaluate":
        state.evaluations.append(record.payload["evaluation"])
    elif record.type == "approve":
        trainer = state.register.signer
        if record.key_id == trainer["key_id"] or record.identity == trainer["identity"]:
            raise SeparationOfDutiesError(
                f"Model {digest} was registered by {trainer['identity']} ({trainer['key_id']}); "
                f"it cannot be approved by {record.identity} ({record.key_id}). Approve with a "
                "different identity and key (default: $ZTML_HOME/keys/approver.key)."
            )
        state.approvals.append(record)
    elif record.type == "revoke":
        state.revocation = record
    return state


def _position(anchor: Record) -> tuple[int, tuple[str, str]]:
    """An anchor's audit seq and what it commits to there: (kind, chain head or tree root)."""
    payload = anchor.payload
    if "note" in payload:
        checkpoint = LogCheckpoint.from_dict(payload)
        return checkpoint.seq, ("root", checkpoint.root.hex())
    return int(payload["seq"]), ("head", str(payload["head"]))


def apply_anchor(last: Record | None, record: Record) -> Record:
    """Check that an anchor neither goes back nor forks from the log's last anchor.

    Raises:
        AnchorError: lower sequence than the last anchor, or same sequence, other head.
    """
    if last is not None:
        log = record.payload["log"]
        (old_seq, old_head), (new_seq, new_head) = _position(last), _position(record)
        if new_seq < old_seq:
            raise AnchorError(
                f"Checkpoint of audit log {log!r} at seq {new_seq} is older than the one "
                f"anchored at ledger seq {last.seq} (audit seq {old_seq}): the audit log "
                "went back. Investigate before anchoring."
            )
        if new_seq == old_seq and old_head[0] == new_head[0] and new_head != old_head:
            raise AnchorError(
                f"Checkpoint of audit log {log!r} at seq {new_seq} has another head than the "
                f"one anchored at ledger seq {last.seq}: the audit log forked."
            )
    return record
