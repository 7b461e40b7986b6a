"""Verify an audit directory: every record, link, sequence number, checkpoint and anchor.

For each log (chain) in the directory, segment by segment and line by line:

* every line parses and is in the canonical form the writer produces;
* record ``seq`` numbers run 0, 1, 2, ... across the log's segments, each ``prev`` is the
  previous record's ``hash`` and each ``hash`` is the SHA-256 link of the record's bytes
  (see :mod:`service.audit.encoding`);
* every checkpoint line names this log, sits right after the record it signs, matches
  that record's seq and hash, appears once, and is signed by a trusted key;
* segments are numbered without gaps and every segment but the last ends with its
  rotation checkpoint; no file ends with an incomplete line (that is reported, never
  repaired here: see ``ztml audit recover``);
* against the anchors (when given): every anchored checkpoint is trusted, appears in the
  segments, and no anchor lies beyond the end of the log; with an anchor index, no
  anchored log is missing. This is what reveals a cut-off tail or a deleted segment;
* each log is also an RFC 6962 Merkle tree of its record lines: a checkpoint in the C2SP
  note form (:class:`~service.chain.tlog.LogCheckpoint`) must sign the root of the
  records before it, and anchored ones are compared by root. Checkpoints of the JSON form
  of earlier versions are still checked against the chain head;
* event times never go back more than the clock skew (300 s, whole seconds) before the
  newest earlier event time of the log (:mod:`service.audit.times`);
* against this verifier's kept checkpoints (when given, see
  :mod:`service.chain.seen`): the log still holds the tree of the newest checkpoint this
  verifier accepted for it before, so a log cut back to an older consistent state is
  refused even when its later checkpoints and anchors were removed with it; after an
  intact run, each log's newest tree checkpoint is kept for next time.

Events after a log's last checkpoint (a process that was killed) are accepted with a
warning unless ``strict``, as long as no anchor claims more.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import NoReturn

from service.audit.anchors import AnchorIndex, AnchorSink
from service.audit.encoding import fast_encode
from service.audit.errors import AuditDirError, AuditTrustError, AuditVerificationError
from service.audit.segments import list_logs, list_segments, segment_name
from service.audit.times import TimeFloor, event_time
from service.chain.core import GENESIS_HASH, Checkpoint, link_hash
from service.chain.errors import CheckpointMismatchError, NoteError, ProofError
from service.chain.merkle import Frontier
from service.chain.seen import SeenCheckpoints
from service.chain.tlog import (
    AnyCheckpoint,
    LogCheckpoint,
    TreeCheckpoint,
    audit_origin,
    checkpoint_from_dict,
)
from service.keys.errors import KeyError_
from service.keys.store import TrustStore

Progress = Callable[[int], None]


@dataclass
class LogSummary:
    """What verification found in one log (chain)."""

    log_id: str
    segments: int = 0
    events: int = 0
    checkpoints: int = 0
    last_seq: int = -1
    head: str = GENESIS_HASH
    signed_seq: int = -1
    tree_signed_seq: int = -1
    anchored_seq: int = -1
    bytes: int = 0

    @property
    def unsigned_events(self) -> int:
        """Events after the last checkpoint (not covered by a signature)."""
        return self.last_seq - self.signed_seq


@dataclass
class AuditReport:
    """The result of verifying an intact audit directory."""

    directory: Path
    logs: list[LogSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def events(self) -> int:
        """Events verified, over all logs."""
        return sum(log.events for log in self.logs)

    @property
    def checkpoints(self) -> int:
        """Checkpoints verified, over all logs."""
        return sum(log.checkpoints for log in self.logs)


def audit_bytes(directory: Path) -> int:
    """Return the total size of the segment files of an audit directory (for progress).

    Raises:
        AuditDirError: the directory is missing or unreadable.
    """
    total = 0
    for log_dir in list_logs(directory):
        for _, path in list_segments(log_dir):
            try:
                total += path.stat().st_size
            except OSError:
                continue
    return total


class _LogVerifier:
    """Walks one log's segments, keeping the chain state."""

    def __init__(
        self,
        log_dir: Path,
        trust: TrustStore,
        *,
        anchored: list[AnyCheckpoint],
        progress: Progress | None,
        remembered: TreeCheckpoint | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.log_id = log_dir.name
        self.trust = trust
        self.progress = progress
        self.summary = LogSummary(self.log_id)
        self.wanted = {cp.seq for cp in anchored}
        if remembered is not None:
            self.wanted.add(remembered.seq)
        self.heads: dict[int, str] = {}
        self.roots: dict[int, bytes] = {}
        self.checkpoints: dict[int, Checkpoint] = {}
        self.tree_checkpoints: dict[int, LogCheckpoint] = {}
        self.tree: list[bytes] = []
        self.times = TimeFloor()

    def run(self) -> LogSummary:
        segments = list_segments(self.log_dir)
        for index, (number, path) in enumerate(segments, start=1):
            if number != index:
                missing = self.log_dir / segment_name(index)
                raise AuditVerificationError(
                    f"segment {missing.name} is missing (found {path.name} next)",
                    file=missing,
                    seq=self.summary.last_seq + 1,
                )
            self._segment(path, last=index == len(segments))
        self.summary.segments = len(segments)
        return self.summary

    def _fail(self, reason: str, path: Path, line: int, seq: int | None = None) -> NoReturn:
        raise AuditVerificationError(reason, file=path, line=line, seq=seq)

    def _segment(self, path: Path, *, last: bool) -> None:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise AuditDirError(f"Cannot read audit segment {path}: {err.strerror}.") from None
        lines = data.split(b"\n")
        partial = lines.pop()  # what follows the last newline: b"" when complete
        expected = self.summary.last_seq + 1
        head = self.summary.head.encode()
        wanted = self.wanted
        tree = self.tree
        admit = self.times.admit
        last_kind = ""
        events_here = 0
        for number, raw in enumerate(lines, start=1):
            # Fast path: the line must end with the expected prev and seq; hash the event's
            # bytes as read. Any mismatch goes to _record, which parses the line and names
            # the fault.
            if raw[:9] == b'{"event":':
                tail = b',"prev":"%b","seq":%d}' % (head, expected)
                if raw.endswith(tail):
                    end = len(raw) - len(tail)
                    digest = raw[end - 65 : end - 1]
                    if (
                        raw[end - 74 : end - 65] == b',"hash":"'
                        and raw[end - 1 : end] == b'"'
                        and sha256(b'{"body":' + raw[9 : end - 74] + tail).hexdigest().encode()
                        == digest
                    ):
                        if not admit(event_time(raw[9 : end - 74])):
                            self._time_fault(raw, path, number, expected)
                        head = digest
                        tree.append(sha256(b"\x00" + raw).digest())
                        carry = expected
                        while carry & 1:  # merge equal subtrees (RFC 6962 right edge)
                            right = tree.pop()
                            tree[-1] = sha256(b"\x01" + tree[-1] + right).digest()
                            carry >>= 1
                        if expected in wanted:
                            self.heads[expected] = digest.decode()
                            self.roots[expected] = self._root(expected + 1)
                        expected += 1
                        events_here += 1
                        last_kind = "event"
                        continue
                self._record(raw, path, number, expected, head.decode())
            else:
                self.summary.last_seq = expected - 1
                self.summary.head = head.decode()
                self._checkpoint(raw, path, number)
                last_kind = "checkpoint"
        self.summary.events += events_here
        self.summary.last_seq = expected - 1
        self.summary.head = head.decode()
        self.summary.bytes += len(data)
        if partial:
            self._fail(
                "incomplete last line (a crash mid-write?); `ztml audit verify` never repairs "
                "it: inspect it and run `ztml audit recover` to remove it",
                path,
                len(lines) + 1,
                expected,
            )
        if not last and (last_kind != "checkpoint" or events_here == 0):
            self._fail(
                "segment does not end with its rotation checkpoint (its tail was cut off)",
                path,
                len(lines),
                expected - 1,
            )
        if self.progress is not None:
            self.progress(len(data))

    def _root(self, size: int) -> bytes:
        return Frontier(size, tuple(self.tree)).root()

    def _time_fault(self, raw: bytes, path: Path, number: int, seq: int) -> NoReturn:
        when = event_time(raw[9:].rsplit(b',"hash":', 1)[0])
        if not when:
            self._fail("event has no time as its last member", path, number, seq)
        self._fail(self.times.refusal(when), path, number, seq)

    def _record(self, raw: bytes, path: Path, number: int, expected: int, head: str) -> NoReturn:
        """Diagnose a record line that failed the fast check; always raises."""
        try:
            record = json.loads(raw)
        except ValueError as err:
            self._fail(f"record is not valid JSON ({err})", path, number, expected)
        if type(record) is not dict or set(record) != {"event", "hash", "prev", "seq"}:
            self._fail("record does not have exactly seq/prev/hash/event", path, number, expected)
        seq = record["seq"]
        prev = record["prev"]
        digest = record["hash"]
        if type(seq) is not int or seq != expected:
            self._fail(
                f"sequence number {seq!r} where {expected} was expected (a record was "
                "deleted, inserted or moved)",
                path,
                number,
                expected,
            )
        if prev != head:
            self._fail(
                "prev does not match the previous record's hash (the chain is broken)",
                path,
                number,
                seq,
            )
        if type(digest) is not str or type(record["event"]) is not dict:
            self._fail("record hash or event has the wrong type", path, number, seq)
        if fast_encode(record) != raw:
            self._fail("record is not in canonical form (altered)", path, number, seq)
        if link_hash(seq, prev, record["event"], encode=fast_encode) != digest:
            self._fail(
                "hash does not match the record's content (the record was altered)",
                path,
                number,
                seq,
            )
        self._fail("record failed verification", path, number, seq)

    def _checkpoint(self, raw: bytes, path: Path, number: int) -> None:
        seq = self.summary.last_seq
        if not raw:
            self._fail("empty line", path, number)
        try:
            record = json.loads(raw)
        except ValueError as err:
            self._fail(f"line is not valid JSON ({err})", path, number, seq + 1)
        if type(record) is not dict or set(record) != {"checkpoint"}:
            self._fail("line is neither a record nor a checkpoint", path, number, seq + 1)
        if type(record["checkpoint"]) is not dict:
            self._fail("checkpoint is not an object", path, number, seq)
        try:
            parsed = checkpoint_from_dict(record["checkpoint"])
        except ValueError as err:
            self._fail(str(err), path, number, seq)
        if fast_encode({"checkpoint": parsed.to_dict()}) != raw:
            self._fail("checkpoint line is not in canonical form (altered)", path, number, seq)
        if isinstance(parsed, LogCheckpoint):
            self._tree_checkpoint(parsed, path, number)
            return
        cp = parsed
        self._check_position(cp.log, cp.seq, path, number, seq)
        if cp.head != self.summary.head:
            self._fail("checkpoint head does not match the record it follows", path, number, seq)
        if seq in self.checkpoints:
            self._fail("duplicate checkpoint for the same record", path, number, seq)
        try:
            cp.verify(self.trust)
        except KeyError_ as err:
            self._fail(f"checkpoint {err}", path, number, seq)
        self.checkpoints[seq] = cp
        self.summary.checkpoints += 1
        self.summary.signed_seq = seq

    def _check_position(self, log: str, cp_seq: int, path: Path, number: int, seq: int) -> None:
        """Both checkpoint forms must name this log and follow the record they sign."""
        if log != self.log_id:
            self._fail(
                f"checkpoint names log {log!r}, not this log (copied from another log?)",
                path,
                number,
                seq,
            )
        if seq < 0 or cp_seq != seq:
            self._fail(
                f"checkpoint for seq {cp_seq} follows record {seq} (moved, or records deleted)",
                path,
                number,
                seq,
            )

    def _tree_checkpoint(self, cp: LogCheckpoint, path: Path, number: int) -> None:
        seq = self.summary.last_seq
        self._check_position(cp.log, cp.seq, path, number, seq)
        if cp.root != self._root(seq + 1):
            self._fail(
                "checkpoint root does not match the records before it (the tree was altered)",
                path,
                number,
                seq,
            )
        if seq in self.tree_checkpoints:
            self._fail("duplicate checkpoint for the same record", path, number, seq)
        try:
            cp.verify(self.trust)
        except NoteError as err:
            self._fail(f"checkpoint {err}", path, number, seq)
        self.tree_checkpoints[seq] = cp
        self.summary.checkpoints += 1
        self.summary.signed_seq = seq
        self.summary.tree_signed_seq = seq


def _check_anchors(
    verifier: _LogVerifier, anchored: list[AnyCheckpoint], trust: TrustStore, source: Path | None
) -> None:
    summary = verifier.summary
    for cp in anchored:
        try:
            cp.verify(trust)
        except (KeyError_, NoteError) as err:
            raise AuditVerificationError(
                f"anchored checkpoint {err}", file=source, log=cp.log, seq=cp.seq
            ) from None
        if cp.seq > summary.last_seq:
            raise AuditVerificationError(
                f"an anchored checkpoint signs seq {cp.seq} but the log ends at seq "
                f"{summary.last_seq}: its newest events or segments were removed",
                log=summary.log_id,
                seq=cp.seq,
            )
        if isinstance(cp, LogCheckpoint):
            matches = verifier.roots.get(cp.seq) == cp.root
            in_segments = verifier.tree_checkpoints.get(cp.seq) == cp
        else:
            matches = verifier.heads.get(cp.seq) == cp.head
            in_segments = verifier.checkpoints.get(cp.seq) == cp
        if not matches:
            raise AuditVerificationError(
                f"the anchored head at seq {cp.seq} does not match the log (it was rewritten)",
                log=summary.log_id,
                seq=cp.seq,
            )
        if not in_segments:
            raise AuditVerificationError(
                f"the anchored checkpoint at seq {cp.seq} is missing from the segments "
                "(a checkpoint line was removed or replaced)",
                log=summary.log_id,
                seq=cp.seq,
            )
        summary.anchored_seq = max(summary.anchored_seq, cp.seq)


def _check_seen(verifier: _LogVerifier, remembered: TreeCheckpoint | None) -> None:
    """Require the log to hold the tree of the checkpoint this verifier kept for it."""
    if remembered is None:
        return
    summary = verifier.summary
    try:
        remembered.require_held(
            size=summary.last_seq + 1,
            root=verifier.roots.get(remembered.seq),
            what="a checkpoint this verifier saw earlier",
            log="log",
            entries="events",
        )
    except CheckpointMismatchError as err:
        raise AuditVerificationError(err.reason, log=summary.log_id, seq=err.seq) from None


def _kept(seen: SeenCheckpoints | None, log_id: str) -> TreeCheckpoint | None:
    if seen is None:
        return None
    try:
        return seen.get(audit_origin(log_id))
    except NoteError as err:
        raise AuditVerificationError(f"verifier state: {err}", log=log_id) from None


def _keep(seen: SeenCheckpoints, verifiers: list[_LogVerifier]) -> None:
    """Keep each log's newest tree checkpoint, once the whole directory verified."""
    for verifier in verifiers:
        if verifier.tree_checkpoints:
            newest = verifier.tree_checkpoints[max(verifier.tree_checkpoints)]
            try:
                seen.remember(newest.checkpoint)
            except (NoteError, ProofError) as err:
                raise AuditVerificationError(
                    f"verifier state: {err}", log=verifier.log_id, seq=newest.seq
                ) from None


def verify_audit_dir(
    path: Path,
    trust: TrustStore,
    *,
    anchors: AnchorSink | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    seen: SeenCheckpoints | None = None,
) -> AuditReport:
    """Verify every log in an audit directory (see the module docs).

    Args:
        path: the audit directory.
        trust: keys trusted to sign checkpoints.
        anchors: the anchor sink the logs anchored to (None: cut-off tails go unnoticed).
        strict: also fail when events follow a log's last checkpoint.
        progress: called with the number of bytes of each verified segment.
        seen: this verifier's kept checkpoints: each log must still hold the one kept
            for it (else it was cut off, rolled back or rewritten), and each log's
            newest tree checkpoint is kept after an intact run.

    Returns:
        The report of an intact directory.

    Raises:
        AuditVerificationError: (a ``ChainVerificationError``) naming the first bad
            record: file, line, seq and what is wrong.
        AuditDirError: the directory is missing or unreadable.
        AuditTrustError: the trust store is empty.
        AnchorError: the anchors cannot be read.
    """
    if not trust.keys:
        raise AuditTrustError(
            "No trusted keys to check audit checkpoints with; pass --trust DIR holding the "
            "audit public key (audit.pub)."
        )
    report = AuditReport(Path(path))
    source = getattr(anchors, "path", None)
    log_dirs = list_logs(path)
    verified: list[_LogVerifier] = []
    for log_dir in log_dirs:
        anchored = anchors.anchors(log_dir.name) if anchors is not None else []
        remembered = _kept(seen, log_dir.name)
        verifier = _LogVerifier(
            log_dir, trust, anchored=anchored, progress=progress, remembered=remembered
        )
        summary = verifier.run()
        _check_anchors(verifier, anchored, trust, source if isinstance(source, Path) else None)
        _check_seen(verifier, remembered)
        verified.append(verifier)
        if summary.segments == 0:
            report.warnings.append(f"log {summary.log_id} has no segment files")
        if summary.unsigned_events > 0:
            message = (
                f"log {summary.log_id}: {summary.unsigned_events} event(s) after the last "
                "checkpoint are not covered by a signature (the writer did not close it)"
            )
            if strict:
                raise AuditVerificationError(message, log=summary.log_id, seq=summary.last_seq)
            report.warnings.append(message)
        report.logs.append(summary)
    if anchors is None:
        report.warnings.append(
            "verified without anchors: a cut-off tail or deleted newest segment is undetectable"
        )
    elif isinstance(anchors, AnchorIndex):
        present = {d.name for d in log_dirs}
        for log_id in anchors.logs():
            # A log started while this ran has anchors but was not listed: it is there.
            if log_id not in present and not (Path(path) / log_id).is_dir():
                raise AuditVerificationError(
                    "this log has anchored checkpoints but its directory is missing (a whole "
                    "log was deleted)",
                    log=log_id,
                )
    if seen is not None:
        _keep(seen, verified)
    return report
