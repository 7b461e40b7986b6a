"""Read audit events back for display (``ztml audit tail``); this does not verify them.

Use :func:`service.audit.verify.verify_audit_dir` to check the log; the reader shows what
the segments hold, skipping checkpoint lines and lines it cannot parse.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.audit.errors import AuditDirError
from service.audit.segments import list_logs, list_segments


@dataclass(frozen=True)
class TailRecord:
    """One event as read from a segment."""

    log_id: str
    seq: int
    event: dict[str, Any]

    @property
    def sort_key(self) -> tuple[str, str, int]:
        """Order by event time, then log, then sequence number."""
        return (str(self.event.get("time", "")), self.log_id, self.seq)


def _parse(log_id: str, raw: bytes) -> TailRecord | None:
    if not raw.startswith(b'{"event":'):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if type(record) is not dict or type(record.get("event")) is not dict:
        return None
    seq = record.get("seq")
    return TailRecord(log_id, seq if type(seq) is int else -1, record["event"])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise AuditDirError(f"Cannot read audit segment {path}: {err.strerror}.") from None


def last_records(directory: Path, count: int) -> list[TailRecord]:
    """Return the newest ``count`` events of all logs in ``directory``, oldest first.

    Raises:
        AuditDirError: the directory or a segment cannot be read.
    """
    if count <= 0:
        return []
    found: list[TailRecord] = []
    for log_dir in list_logs(directory):
        mine: list[TailRecord] = []
        for _, path in reversed(list_segments(log_dir)):
            lines = _read(path).split(b"\n")[:-1]  # the part after the last newline is partial
            for raw in reversed(lines):
                record = _parse(log_dir.name, raw)
                if record is not None:
                    mine.append(record)
                    if len(mine) >= count:
                        break
            if len(mine) >= count:
                break
        found.extend(mine)
    found.sort(key=lambda r: r.sort_key)
    return found[-count:]


def follow(
    directory: Path,
    *,
    interval: float = 0.5,
    stop: Callable[[], bool] | None = None,
) -> Iterator[TailRecord]:
    """Return an iterator over events appended to any log in ``directory`` from now on.

    Polls every ``interval`` seconds, picking up new logs and segments, and yields only
    complete lines. Runs until ``stop()`` returns true (or forever).

    Raises:
        AuditDirError: the directory cannot be read.
    """
    offsets: dict[Path, int] = {}
    for log_dir in list_logs(directory):
        for _, path in list_segments(log_dir):
            data = _read(path)
            offsets[path] = data.rfind(b"\n") + 1
    return _poll(directory, offsets, interval=interval, stop=stop)


def _poll(
    directory: Path,
    offsets: dict[Path, int],
    *,
    interval: float,
    stop: Callable[[], bool] | None,
) -> Iterator[TailRecord]:
    while stop is None or not stop():
        batch: list[TailRecord] = []
        for log_dir in list_logs(directory):
            for _, path in list_segments(log_dir):
                start = offsets.get(path, 0)
                try:
                    with open(path, "rb") as handle:
                        handle.seek(start)
                        data = handle.read()
                except OSError:
                    continue
                end = data.rfind(b"\n") + 1
                if end == 0:
                    continue
                offsets[path] = start + end
                for raw in data[:end].split(b"\n")[:-1]:
                    record = _parse(log_dir.name, raw)
                    if record is not None:
                        batch.append(record)
        batch.sort(key=lambda r: r.sort_key)
        yield from batch
        if stop is not None and stop():
            return
        time.sleep(interval)
