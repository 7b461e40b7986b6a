"""Find and (only on request) remove the incomplete last line a crash leaves behind.

A writer appends each line with one ``write``; if the process or machine dies during that
write, the segment may end with part of a line (no newline). ``ztml audit verify`` reports
it and fails; only ``ztml audit recover`` removes it, after saying what it removes. It
refuses to touch anything a crash cannot cause: an incomplete line in a segment that is
not its log's last one, or a "line" longer than any record, and it leaves the segments of
a log whose writer process is still alive alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from service.audit.errors import AuditDirError, AuditRecoverError
from service.audit.segments import host_tag, incomplete_tail, list_logs, list_segments

#: No record line is this long; a longer "incomplete line" is not an interrupted write.
MAX_PARTIAL = 1 << 20


@dataclass(frozen=True)
class IncompleteLine:
    """An incomplete last line: where it is and what it holds."""

    path: Path
    line: int
    offset: int
    data: bytes

    def preview(self, width: int = 60) -> str:
        """Return a printable excerpt of the partial line."""
        text = self.data[:width].decode("utf-8", errors="replace")
        return repr(text) + (" ..." if len(self.data) > width else "")


def _line_number(path: Path, offset: int) -> int:
    count = 0
    with open(path, "rb") as handle:
        remaining = offset
        while remaining > 0:
            chunk = handle.read(min(remaining, 1 << 20))
            if not chunk:
                break
            count += chunk.count(b"\n")
            remaining -= len(chunk)
    return count + 1


def _find(path: Path) -> IncompleteLine | None:
    tail = incomplete_tail(path)
    if tail is None:
        return None
    offset, data = tail
    return IncompleteLine(path, _line_number(path, offset), offset, data)


def writer_alive(log_id: str) -> bool:
    """Return whether the process writing log ``log_id`` still runs on this host."""
    parts = log_id.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or parts[0] != host_tag():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_incomplete(directory: Path, *, anchors_path: Path | None = None) -> list[IncompleteLine]:
    """Return the incomplete last lines of an audit directory (and its anchors file).

    Raises:
        AuditDirError: the directory is missing or unreadable.
        AuditRecoverError: an incomplete line sits where a crash cannot leave one.
    """
    found = []
    for log_dir in list_logs(directory):
        segments = list_segments(log_dir)
        for index, (_, path) in enumerate(segments, start=1):
            item = _find(path)
            if item is None:
                continue
            if index != len(segments):
                raise AuditRecoverError(
                    f"{path} line {item.line} is incomplete but {path.name} is not the last "
                    "segment of its log: a crash cannot cause that. It is left untouched; "
                    "treat the log as tampered."
                )
            found.append(item)
    if anchors_path is not None and Path(anchors_path).exists():
        item = _find(Path(anchors_path))
        if item is not None:
            found.append(item)
    for item in found:
        if len(item.data) > MAX_PARTIAL:
            raise AuditRecoverError(
                f"{item.path} ends with {len(item.data)} bytes without a newline: too long to "
                "be an interrupted write. It is left untouched; treat the log as tampered."
            )
    return found


def remove_incomplete(items: list[IncompleteLine]) -> None:
    """Truncate each file to just before its incomplete last line, and fsync it.

    Raises:
        AuditRecoverError: a file changed since it was inspected or its writer is alive.
        AuditDirError: a file cannot be written.
    """
    for item in items:
        log_id = item.path.parent.name
        if item.path.name.startswith("segment-") and writer_alive(log_id):
            raise AuditRecoverError(
                f"{item.path}: the process writing log {log_id} is still running; stop it "
                "before recovering its log."
            )
        try:
            size = item.path.stat().st_size
            if size != item.offset + len(item.data):
                raise AuditRecoverError(
                    f"{item.path} changed while recovering (size {size}); run recover again."
                )
            fd = os.open(item.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, item.offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise AuditDirError(f"Cannot truncate {item.path}: {err.strerror}.") from None
