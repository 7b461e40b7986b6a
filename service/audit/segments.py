"""The audit directory layout: one directory per log (chain), numbered segment files.

::

    <audit dir>/<log id>/segment-000001.jsonl
                         segment-000002.jsonl ...

A log id is ``<hostname>-<pid>-<start ns>``: every :class:`~service.audit.log.AuditLog`
(one per writing process) starts its own chain, so writers never share a file or a lock.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

from service.audit.errors import AuditDirError

SEGMENT_RE = re.compile(r"segment-(\d{6,})\.jsonl")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def segment_name(number: int) -> str:
    """Return the file name of segment ``number`` (1-based)."""
    return f"segment-{number:06d}.jsonl"


def host_tag() -> str:
    """Return this host's name as it appears in log ids (file-name safe)."""
    return _UNSAFE.sub("_", socket.gethostname())[:64] or "host"


def new_log_id() -> str:
    """Return a fresh log id: ``<hostname>-<pid>-<start ns>`` (file-name safe)."""
    return f"{host_tag()}-{os.getpid()}-{time.time_ns()}"


def check_audit_dir(directory: Path) -> Path:
    """Return ``directory`` if it is a readable directory.

    Raises:
        AuditDirError: it is missing, not a directory or unreadable.
    """
    directory = Path(directory)
    if not directory.exists():
        raise AuditDirError(
            f"Audit directory {directory} does not exist. Pass the directory the service "
            "writes its audit log to (default $ZTML_HOME/audit)."
        )
    if not directory.is_dir():
        raise AuditDirError(f"Audit path {directory} is not a directory.")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise AuditDirError(f"Audit directory {directory} is not readable by this user.")
    return directory


def list_logs(directory: Path) -> list[Path]:
    """Return the log directories of an audit directory, sorted by name.

    Raises:
        AuditDirError: the directory is missing or unreadable.
    """
    directory = check_audit_dir(directory)
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir())
    except OSError as err:
        raise AuditDirError(f"Cannot list audit directory {directory}: {err.strerror}.") from None


def list_segments(log_dir: Path) -> list[tuple[int, Path]]:
    """Return ``(number, path)`` of the segment files of a log, by number.

    Raises:
        AuditDirError: the log directory cannot be listed.
    """
    try:
        names = os.listdir(log_dir)
    except OSError as err:
        raise AuditDirError(f"Cannot list audit log {log_dir}: {err.strerror}.") from None
    found = []
    for name in names:
        match = SEGMENT_RE.fullmatch(name)
        if match:
            found.append((int(match.group(1)), Path(log_dir) / name))
    return sorted(found)


def incomplete_tail(path: Path) -> tuple[int, bytes] | None:
    """Return ``(offset, bytes)`` of a file's incomplete last line, or None if it is whole.

    A line is complete when it ends with a newline; what follows the last newline is
    the remainder of a write cut short (a crash mid-write).

    Raises:
        AuditDirError: the file cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return None
            block = 1 << 16
            end = size
            while end > 0:
                start = max(0, end - block)
                handle.seek(start)
                chunk = handle.read(end - start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    offset = start + newline + 1
                    break
                end = start
            else:
                offset = 0
            if offset == size:
                return None
            handle.seek(offset)
            return offset, handle.read()
    except OSError as err:
        raise AuditDirError(f"Cannot read {path}: {err.strerror}.") from None
