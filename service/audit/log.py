"""The audit log writer: one hash chain per process, JSON Lines segments, signed checkpoints.

Each :class:`AuditLog` starts a new chain (log id ``<hostname>-<pid>-<start ns>``) in
``<directory>/<log id>/segment-000001.jsonl`` and appends one line per event (see
:mod:`service.audit.encoding` for the deterministic encoding and line format). No lock is
shared between processes; within a process a lock serialises appends, so the log is
thread-safe, and ``append`` is short and synchronous, so an asyncio server may call it
directly.

The chain is also an RFC 6962 Merkle tree whose leaves are the record lines (without
the newline); the writer keeps its frontier, O(log n) per event. Checkpoints are C2SP
``tlog-checkpoint`` signed notes (:class:`~service.chain.tlog.LogCheckpoint`, origin
``ztml.local/audit/<log id>``, signed with the audit key) and are written every
``checkpoint_every`` events or ``checkpoint_seconds`` seconds (a background
thread covers idle periods), when a segment reaches ``segment_bytes`` (the segment then
ends with the checkpoint and the chain continues in the next segment) and at
:meth:`AuditLog.close`. Each checkpoint line ``{"checkpoint": {...}}`` is signed and
written into the segment by the appending call; the same background thread then fsyncs
the segment and, only after that, sends the checkpoint to the anchor sink (by default a
file next to the audit directory, see :mod:`service.audit.anchors`), so ``append`` never
waits for the disk or the ledger and an anchor never claims more than the disk holds.
:meth:`AuditLog.sync` waits for that work; :meth:`AuditLog.close` does too.

Durability (``fsync``):

* ``"checkpoint"`` (default): every line is written to the OS (one unbuffered
  ``write``) before ``append`` returns, so a killed process loses nothing that
  ``append`` reported committed; the segment is fsync'ed after every checkpoint, so a
  power loss loses at most the events since the last checkpoint (plus the time the
  background fsync takes).
* ``"always"``: also fsync after every event, before ``append`` returns (durable across
  power loss; much slower).
* ``"never"``: write to the OS only; the OS decides when data reaches the disk.

Call :meth:`AuditLog.close` at shutdown: it writes the final checkpoint and waits until
it is fsync'ed and anchored. A process that dies without closing leaves events after
its last checkpoint, which the verifier accepts (with a warning) unless an anchor claims
more.

Event times may not go back more than ``MAX_CLOCK_SKEW_S`` (300 s) before the newest
event time of the chain: such an event is refused (:class:`AuditEventError`), so the
verifier, which checks the same, never finds one.

A failed write leaves the log unusable (fail closed): later appends raise
:class:`~service.audit.errors.AuditWriteError`; create a new ``AuditLog`` (a new chain).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from service.audit.anchors import AnchorSink, FileAnchorSink, default_anchors_path
from service.audit.encoding import fast_encode
from service.audit.errors import AnchorError, AuditError, AuditEventError, AuditWriteError
from service.audit.events import encode_event
from service.audit.segments import new_log_id, segment_name
from service.audit.times import TimeFloor, event_time
from service.chain.core import GENESIS_HASH
from service.chain.errors import NoteError
from service.chain.merkle import Frontier
from service.chain.tlog import LogCheckpoint, TreeCheckpoint, audit_origin
from service.keys.errors import KeyError_
from service.keys.store import Signer
from service.toolchain.paths import ztml_home

FsyncMode = Literal["always", "checkpoint", "never"]
_log = logging.getLogger(__name__)
_sha256 = hashlib.sha256
_current_pid = os.getpid()

# A worker job: (descriptor to fsync or -1, checkpoint to anchor, event to set when done);
# descriptor _STOP ends the worker.
_Job = tuple[int, LogCheckpoint | None, threading.Event | None]
_STOP = -2


def _after_fork() -> None:
    global _current_pid
    _current_pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class AuditLog:
    """A hash-chained, signed, append-only audit log written by this process.

    Attributes:
        log_id: this chain's id (its directory name).
        log_dir: the directory holding this chain's segments.
        anchor_failures: checkpoints the anchor sink failed to record (logged as warnings).
    """

    def __init__(
        self,
        directory: Path,
        signer: Signer,
        *,
        anchor_sink: AnchorSink | Literal["file"] | None = "file",
        segment_bytes: int = 64 << 20,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float | None = 5.0,
        fsync: FsyncMode = "checkpoint",
        mirror_stdout: bool = False,
    ) -> None:
        """Start a new chain in ``directory``.

        Args:
            directory: the audit directory (created 0700 if missing).
            signer: signs checkpoints (the ``audit`` key).
            anchor_sink: where checkpoints are anchored: ``"file"`` (default) for a
                :class:`FileAnchorSink` at ``<directory>-anchors.jsonl``, a sink, or None
                (then cutting off the newest events cannot be detected).
            segment_bytes: rotate to a new segment once a segment reaches this size.
            checkpoint_every: write a checkpoint after this many events.
            checkpoint_seconds: write a checkpoint when events are this old (None: never
                by time).
            fsync: durability setting (see the module docs).
            mirror_stdout: also print each record as one JSON line on stdout.

        Raises:
            AuditWriteError: the directory or segment cannot be created, or an option is
                invalid.
            AnchorError: the anchors file cannot be created.
        """
        if fsync not in ("always", "checkpoint", "never"):
            raise AuditWriteError(
                f"fsync must be 'always', 'checkpoint' or 'never', not {fsync!r}."
            )
        if segment_bytes < 1024 or checkpoint_every < 1:
            raise AuditWriteError("segment_bytes must be >= 1024 and checkpoint_every >= 1.")
        if checkpoint_seconds is not None and checkpoint_seconds <= 0:
            raise AuditWriteError("checkpoint_seconds must be positive or None.")
        self.directory = Path(directory)
        self.signer = signer
        self.segment_bytes = segment_bytes
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.fsync: FsyncMode = fsync
        self.mirror_stdout = mirror_stdout
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise AuditWriteError(
                f"Cannot create audit directory {self.directory}: {err.strerror}."
            ) from None
        if anchor_sink == "file":
            file_sink = FileAnchorSink(default_anchors_path(self.directory))
            file_sink.create()
            self.anchor_sink: AnchorSink | None = file_sink
        else:
            self.anchor_sink = anchor_sink
            if isinstance(anchor_sink, FileAnchorSink):
                anchor_sink.create()
        if self.anchor_sink is None:
            _log.warning("audit log without an anchor sink: a cut-off tail is undetectable")
        self.anchor_failures = 0
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._seq = 0
        self._head_bytes = GENESIS_HASH.encode()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._segment = 0
        self._segment_size = 0
        self._fd = -1
        self._closed = False
        self._failed: str | None = None
        self._fsync_each = fsync == "always"
        self._tree: list[bytes] = []  # the frontier: roots of the perfect subtrees
        self._times = TimeFloor()
        self.log_id, self.log_dir = self._create_log_dir()
        self._open_segment()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._worker = threading.Thread(
            target=self._run_worker, name=f"audit-{self.log_id}", daemon=True
        )
        self._worker.start()

    # -- setup -------------------------------------------------------------------------

    def _create_log_dir(self) -> tuple[str, Path]:
        for _ in range(5):
            log_id = new_log_id()
            log_dir = self.directory / log_id
            try:
                log_dir.mkdir(mode=0o700)
            except FileExistsError:
                continue
            except OSError as err:
                raise AuditWriteError(
                    f"Cannot create audit log directory {log_dir}: {err.strerror}. Check the "
                    f"permissions of {self.directory}."
                ) from None
            return log_id, log_dir
        raise AuditWriteError(f"Cannot find a fresh log id in {self.directory}.")

    def _open_segment(self) -> None:
        self._segment += 1
        path = self.log_dir / segment_name(self._segment)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags, 0o600)
            if self.fsync != "never":
                dir_fd = os.open(self.log_dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as err:
            self._failed = f"cannot create segment {path}: {err.strerror}"
            raise AuditWriteError(f"Cannot create audit segment {path}: {err.strerror}.") from None
        self._segment_path = path
        self._segment_size = 0

    # -- properties ----------------------------------------------------------------------

    @property
    def segment_path(self) -> Path:
        """The segment currently written."""
        return self._segment_path

    @property
    def last_seq(self) -> int:
        """The sequence number of the last committed event (-1 before the first)."""
        return self._seq - 1

    @property
    def head(self) -> str:
        """The hash of the last committed event (64 zeros before the first)."""
        return self._head_bytes.decode()

    # -- writing -------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # rare: a short write (e.g. a signal or a full disk)
                written += os.write(self._fd, data[written:])
        except OSError as err:
            self._failed = f"write to {self._segment_path} failed: {err.strerror}"
            raise AuditWriteError(
                f"Audit write to {self._segment_path} failed: {err.strerror}. The log is "
                "closed for writing; fix the cause and start a new AuditLog."
            ) from None
        self._segment_size += len(data)

    def _check_usable(self) -> None:
        if self._closed:
            raise AuditWriteError(f"Audit log {self.log_id} is closed.")
        if self._failed is not None:
            raise AuditWriteError(
                f"Audit log {self.log_id} failed earlier ({self._failed}); start a new AuditLog."
            )
        if _current_pid != self._pid:
            raise AuditWriteError(
                f"Audit log {self.log_id} belongs to process {self._pid}; each process must "
                "create its own AuditLog (one chain per writing process)."
            )

    def append(self, event: dict[str, Any]) -> int:
        """Validate, chain and write one event; return its sequence number.

        Returns only after the record line was written to the OS (and fsync'ed with
        ``fsync="always"``): a returned sequence number is committed.

        Raises:
            AuditEventError: the event is invalid or holds a raw input or a credential.
            AuditWriteError: the log is closed, failed, or the write failed.
        """
        data = encode_event(event)
        at = data.rfind(b'"time":"', -42)  # the event's last member (see service.audit.times)
        second = data[at + 8 : at + 27]
        with self._lock:
            if self._closed or self._failed is not None or self._pid != _current_pid:
                self._check_usable()
            times = self._times
            if second >= times.newest and at >= 0:
                times.newest = second
            elif not times.admit(event_time(data)):
                raise AuditEventError(times.refusal(event_time(data)))
            seq = self._seq
            prev = self._head_bytes
            digest = _sha256(b'{"body":%b,"prev":"%b","seq":%d}' % (data, prev, seq)).hexdigest()
            digest_bytes = digest.encode()
            line = b'{"event":%b,"hash":"%b","prev":"%b","seq":%d}\n' % (
                data,
                digest_bytes,
                prev,
                seq,
            )
            self._write(line)
            tree = self._tree
            tree.append(_sha256(b"\x00" + line[:-1]).digest())
            carry = seq
            while carry & 1:  # merge equal subtrees (RFC 6962 right edge)
                right = tree.pop()
                tree[-1] = _sha256(b"\x01" + tree[-1] + right).digest()
                carry >>= 1
            self._seq = seq + 1
            self._head_bytes = digest_bytes
            self._since_checkpoint += 1
            if self._fsync_each:
                self._fsync()
            if self.mirror_stdout:
                self._mirror(seq, digest, data)
            if self._segment_size >= self.segment_bytes:
                self._checkpoint_locked()
                self._rotate()
            elif self._since_checkpoint >= self.checkpoint_every or (
                self.checkpoint_seconds is not None
                and time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds
            ):
                self._checkpoint_locked()
        return seq

    def _mirror(self, seq: int, digest: str, data: bytes) -> None:
        head = fast_encode({"audit_log": self.log_id, "hash": digest, "seq": seq})[:-1]
        sys.stdout.write(head.decode() + ',"event":' + data.decode() + "}\n")
        sys.stdout.flush()

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as err:
            self._failed = f"fsync of {self._segment_path} failed: {err.strerror}"
            raise AuditWriteError(
                f"fsync of audit segment {self._segment_path} failed: {err.strerror}."
            ) from None

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        self._open_segment()

    def _checkpoint_locked(self) -> LogCheckpoint | None:
        self._last_checkpoint = time.monotonic()
        if self._since_checkpoint == 0 or self._seq == 0:
            return None
        try:
            root = Frontier(self._seq, tuple(self._tree)).root()
            cp = LogCheckpoint(
                self.log_id,
                TreeCheckpoint.create(
                    origin=audit_origin(self.log_id), size=self._seq, root=root, signer=self.signer
                ),
            )
        except (KeyError_, NoteError, ValueError, TypeError) as err:
            self._failed = f"signing a checkpoint failed: {err}"
            raise AuditWriteError(f"Cannot sign audit checkpoint: {err}") from None
        self._write(fast_encode({"checkpoint": cp.to_dict()}) + b"\n")
        self._since_checkpoint = 0
        sync_fd = -1
        if self.fsync != "never":
            try:
                sync_fd = os.dup(self._fd)
            except OSError as err:
                self._failed = f"cannot duplicate the segment descriptor: {err.strerror}"
                raise AuditWriteError(f"Cannot sync audit segment: {err.strerror}.") from None
        self._jobs.put((sync_fd, cp, None))
        return cp

    def checkpoint(self, *, wait: bool = True) -> LogCheckpoint | None:
        """Write a checkpoint now if events arrived since the last one.

        Args:
            wait: also wait until it is fsync'ed and anchored (see :meth:`sync`).

        Returns:
            The new checkpoint, or None if there was nothing new to sign.

        Raises:
            AuditWriteError: the log is closed or failed, or the write failed.
        """
        with self._lock:
            self._check_usable()
            cp = self._checkpoint_locked()
        if wait:
            self.sync()
        return cp

    def sync(self) -> None:
        """Wait until every checkpoint written so far is fsync'ed and anchored."""
        if self._pid != _current_pid or not self._worker.is_alive():
            return
        done = threading.Event()
        self._jobs.put((-1, None, done))
        done.wait()

    def _run_worker(self) -> None:
        """Fsync and anchor checkpoints off the hot path; checkpoint idle logs by time.

        A checkpoint is anchored only after its segment was fsync'ed, so an anchor never
        claims more than the disk holds.
        """
        tick = None if self.checkpoint_seconds is None else self.checkpoint_seconds / 2
        while True:
            try:
                job = self._jobs.get(timeout=tick)
            except queue.Empty:
                job = (-1, None, None)
            sync_fd, cp, done = job
            if sync_fd == _STOP:
                return
            if sync_fd >= 0:
                try:
                    os.fsync(sync_fd)
                except OSError as err:
                    with self._lock:
                        self._failed = f"fsync of {self.log_id} failed: {err.strerror}"
                    _log.error("audit log %s: fsync failed: %s", self.log_id, err.strerror)
                    cp = None
                finally:
                    os.close(sync_fd)
            if cp is not None and self.anchor_sink is not None:
                try:
                    self.anchor_sink.anchor(cp)
                except (AnchorError, OSError) as err:
                    self.anchor_failures += 1
                    _log.warning("audit checkpoint %s/%d not anchored: %s", cp.log, cp.seq, err)
            if done is not None:
                done.set()
            if self.checkpoint_seconds is not None:
                self._checkpoint_if_due(self.checkpoint_seconds)

    def _checkpoint_if_due(self, seconds: float) -> None:
        with self._lock:
            if self._closed or self._failed is not None or self._pid != _current_pid:
                return
            if time.monotonic() - self._last_checkpoint < seconds:
                return
            try:
                self._checkpoint_locked()
            except AuditError as err:
                _log.error("audit log %s: timed checkpoint failed: %s", self.log_id, err)

    def close(self) -> None:
        """Write a final checkpoint (if events are unsigned), sync, anchor and close.

        Returns once the final checkpoint is fsync'ed and anchored. Closing twice is
        harmless.

        Raises:
            AuditWriteError: the final checkpoint could not be written.
        """
        with self._lock:
            if self._closed:
                return
            try:
                if self._failed is None and self._pid == _current_pid:
                    self._checkpoint_locked()
            finally:
                self._closed = True
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
        if self._pid == _current_pid and self._worker.is_alive():
            self._jobs.put((_STOP, None, None))
            self._worker.join()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_audit_log(
    directory: Path | None = None,
    *,
    key_path: Path | None = None,
    identity: str = "audit",
    **options: Any,
) -> AuditLog:
    """Open a new audit chain with the audit key from the key store.

    Args:
        directory: the audit directory (default ``$ZTML_HOME/audit``).
        key_path: the private key (default ``$ZTML_HOME/keys/audit.key``).
        identity: the signer identity.
        **options: passed to :class:`AuditLog`.

    Raises:
        AuditWriteError: the key is missing, unreadable or has loose permissions, or the
            log cannot be created.
    """
    home = ztml_home()
    key_path = key_path or home / "keys" / "audit.key"
    try:
        signer = Signer.from_file(key_path, identity)
    except KeyError_ as err:
        raise AuditWriteError(f"Cannot load the audit signing key: {err}") from None
    return AuditLog(directory or home / "audit", signer, **options)
