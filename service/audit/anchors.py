"""Where audit checkpoints are anchored outside the audit directory.

Every checkpoint an :class:`~service.audit.log.AuditLog` writes into its segment is also
sent to an :class:`AnchorSink`. The verifier compares the anchored checkpoints with the
segments, so deleting the newest events, a whole segment or a whole log is detected even
though the hash chain itself still looks intact. Two sinks exist:

* :class:`FileAnchorSink`: an append-only JSON Lines file kept outside the audit
  directory (by default ``<audit dir>-anchors.jsonl`` next to it), one
  ``{"checkpoint": {"log", "note"}}`` line per checkpoint (earlier versions wrote the
  JSON checkpoint there), shared by all writing processes
  (appends take an exclusive ``flock`` and are single ``O_APPEND`` writes).
* :class:`LedgerAnchorSink`: the provenance ledger's ``anchor``/``anchors``.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from service.audit.encoding import fast_encode
from service.audit.errors import AnchorError, AuditVerificationError
from service.chain.tlog import AnyCheckpoint, checkpoint_from_dict
from service.keys.store import Signer


@runtime_checkable
class AnchorSink(Protocol):
    """Receives checkpoints as they are made and returns them for verification."""

    def anchor(self, cp: AnyCheckpoint) -> None:
        """Record one checkpoint."""

    def anchors(self, log: str) -> list[AnyCheckpoint]:
        """Return every checkpoint recorded for log ``log``."""


@runtime_checkable
class AnchorIndex(Protocol):
    """An anchor sink that can also list the logs it holds checkpoints for."""

    def logs(self) -> list[str]:
        """Return the ids of every log with at least one anchored checkpoint."""


def default_anchors_path(audit_dir: Path) -> Path:
    """Return the default anchors file of an audit directory (a sibling file, not inside)."""
    audit_dir = Path(audit_dir)
    return audit_dir.parent / f"{audit_dir.name}-anchors.jsonl"


class FileAnchorSink:
    """Checkpoints appended to a JSON Lines file outside the audit directory."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        """Use the anchors file ``path`` (created, mode 0600, on the first anchor).

        Args:
            path: the anchors file.
            fsync: fsync the file after each anchor (they are rare; on by default).
        """
        self.path = Path(path)
        self.fsync = fsync
        self._cache: tuple[tuple[int, int], dict[str, list[AnyCheckpoint]]] | None = None

    def create(self) -> None:
        """Create the anchors file (empty, 0600) if it does not exist yet.

        Raises:
            AnchorError: the file or its directory cannot be created.
        """
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as err:
            raise AnchorError(f"Cannot create anchors file {self.path}: {err.strerror}.") from None
        os.close(fd)

    def anchor(self, cp: AnyCheckpoint) -> None:
        """Append one checkpoint line.

        Raises:
            AnchorError: the file cannot be written, or its last line is incomplete (a
                crash mid-write: run ``ztml audit recover --anchors FILE`` first).
        """
        line = fast_encode({"checkpoint": cp.to_dict()}) + b"\n"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as err:
            raise AnchorError(f"Cannot open anchors file {self.path}: {err.strerror}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                raise AnchorError(
                    f"Anchors file {self.path} ends with an incomplete line; refusing to "
                    f"append. Inspect it and run `ztml audit recover --anchors {self.path}`."
                )
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        except OSError as err:
            raise AnchorError(f"Cannot write anchors file {self.path}: {err.strerror}.") from None
        finally:
            os.close(fd)  # also releases the lock

    def _load(self) -> dict[str, list[AnyCheckpoint]]:
        try:
            stat = self.path.stat()
            key = (stat.st_size, stat.st_mtime_ns)
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise AnchorError(
                f"Anchors file {self.path} does not exist. Pass the file the audit log "
                "anchored to (--anchors), or --no-anchors to verify without it."
            ) from None
        except OSError as err:
            raise AnchorError(f"Cannot read anchors file {self.path}: {err.strerror}.") from None
        by_log: dict[str, list[AnyCheckpoint]] = {}
        lines = data.split(b"\n")
        if lines[-1]:
            raise AuditVerificationError(
                "incomplete last line (a crash mid-write?); inspect it and run "
                f"`ztml audit recover --anchors {self.path}` to remove it",
                file=self.path,
                line=len(lines),
            )
        for number, raw in enumerate(lines[:-1], start=1):
            cp = _parse_anchor(raw, self.path, number)
            by_log.setdefault(cp.log, []).append(cp)
        self._cache = (key, by_log)
        return by_log

    def anchors(self, log: str) -> list[AnyCheckpoint]:
        """Return the checkpoints anchored for ``log``, in file order.

        Raises:
            AnchorError: the file is missing or unreadable.
            AuditVerificationError: a line is corrupt or incomplete.
        """
        return list(self._load().get(log, []))

    def logs(self) -> list[str]:
        """Return the ids of all logs with an anchored checkpoint.

        Raises:
            AnchorError: the file is missing or unreadable.
            AuditVerificationError: a line is corrupt or incomplete.
        """
        return sorted(self._load())


def _parse_anchor(raw: bytes, path: Path, number: int) -> AnyCheckpoint:
    try:
        record = json.loads(raw)
    except ValueError as err:
        raise AuditVerificationError(
            f"anchor line is not valid JSON ({err}): corrupt or tampered",
            file=path,
            line=number,
        ) from None
    body: Any = record.get("checkpoint") if type(record) is dict else None
    if type(body) is not dict or len(record) != 1:
        raise AuditVerificationError(
            'anchor line is not {"checkpoint": {...}}', file=path, line=number
        )
    try:
        cp = checkpoint_from_dict(body)
    except ValueError as err:
        raise AuditVerificationError(str(err), file=path, line=number) from None
    if fast_encode({"checkpoint": cp.to_dict()}) != raw:
        raise AuditVerificationError(
            "anchor line is not in canonical form (altered)", file=path, line=number
        )
    return cp


class LedgerAnchorSink:
    """Checkpoints anchored in the provenance ledger (``Ledger.anchor``/``anchors``)."""

    def __init__(self, ledger: Any, signer: Signer | None = None) -> None:
        """Anchor into ``ledger``, whose anchor records are signed by ``signer``.

        Args:
            ledger: an open ledger (``service.ledger.open_ledger``).
            signer: the signer of the ledger's anchor records; only needed to anchor.
        """
        self.ledger = ledger
        self.signer = signer

    def anchor(self, cp: AnyCheckpoint) -> None:
        """Record the checkpoint in the ledger.

        Raises:
            AnchorError: no signer was given or the ledger refused or failed.
        """
        if self.signer is None:
            raise AnchorError("LedgerAnchorSink needs a signer to anchor checkpoints.")
        try:
            self.ledger.anchor(cp, self.signer)
        except Exception as err:
            raise AnchorError(f"Cannot anchor checkpoint in the ledger: {err}") from None

    def anchors(self, log: str) -> list[AnyCheckpoint]:
        """Return the checkpoints the ledger holds for ``log``.

        Raises:
            AnchorError: the ledger cannot be read.
        """
        try:
            return list(self.ledger.anchors(log))
        except Exception as err:
            raise AnchorError(f"Cannot read anchors from the ledger: {err}") from None

    def logs(self) -> list[str]:
        """Return the ids of all audit logs with a checkpoint anchored in the ledger.

        Raises:
            AnchorError: the ledger cannot be read.
        """
        try:
            return sorted(
                {
                    str(record.payload.get("log"))
                    for record in self.ledger.records()
                    if record.type == "anchor"
                }
            )
        except Exception as err:
            raise AnchorError(f"Cannot read anchors from the ledger: {err}") from None
