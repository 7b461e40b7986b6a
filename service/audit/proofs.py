"""Merkle proofs over one audit chain, and the upgrade of chains written before them.

Each chain (log) is an RFC 6962 tree whose leaf ``n`` is record line ``seq n`` (without
its newline), exactly as stored. :func:`log_prover` reads a log's record lines and its
tree checkpoints so ``ztml audit prove`` can print proofs for ``scripts/tlog-verify``.

:func:`upgrade_log` brings a chain written by an earlier version (JSON checkpoints, no
tree) up to date: nothing is rewritten; one tree checkpoint covering every event is
signed, appended to the log's last segment and anchored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from service.audit.anchors import AnchorSink
from service.audit.encoding import CHECKPOINT_PREFIX, EVENT_PREFIX, fast_encode
from service.audit.errors import AuditDirError, AuditVerificationError, AuditWriteError
from service.audit.recover import writer_alive
from service.audit.segments import list_segments
from service.chain.errors import NoteError
from service.chain.proofs import TreeProver
from service.chain.tlog import LogCheckpoint, TreeCheckpoint, audit_origin, checkpoint_from_dict
from service.keys.store import Signer


def read_log(log_dir: Path) -> tuple[list[bytes], dict[int, LogCheckpoint]]:
    """Return a log's record lines and its tree checkpoints by size (not verified).

    Raises:
        AuditDirError: a segment cannot be read.
        AuditVerificationError: a checkpoint line cannot be parsed.
    """
    leaves: list[bytes] = []
    checkpoints: dict[int, LogCheckpoint] = {}
    for _, path in list_segments(log_dir):
        try:
            data = path.read_bytes()
        except OSError as err:
            raise AuditDirError(f"Cannot read audit segment {path}: {err.strerror}.") from None
        for number, raw in enumerate(data.split(b"\n")[:-1], start=1):
            if raw.startswith(EVENT_PREFIX):
                leaves.append(raw)
            elif raw.startswith(CHECKPOINT_PREFIX):
                try:
                    parsed = checkpoint_from_dict(json.loads(raw)["checkpoint"])
                except (ValueError, KeyError, TypeError) as err:
                    raise AuditVerificationError(str(err), file=path, line=number) from None
                if isinstance(parsed, LogCheckpoint):
                    checkpoints[parsed.size] = parsed
    return leaves, checkpoints


def log_prover(log_dir: Path) -> tuple[TreeProver, dict[int, LogCheckpoint]]:
    """A prover over a log's record lines, and its tree checkpoints by size.

    Raises:
        AuditDirError: the log cannot be read.
        AuditVerificationError: a checkpoint line cannot be parsed.
    """
    leaves, checkpoints = read_log(log_dir)
    return TreeProver(leaves), checkpoints


def upgrade_log(log_dir: Path, signer: Signer, anchors: AnchorSink | None) -> LogCheckpoint | None:
    """Sign a tree checkpoint of every event of a finished log written by an earlier version.

    Run it on a verified directory: the checkpoint line is appended to the log's last
    segment (and fsync'ed), then anchored. A log whose newest tree checkpoint already
    covers every event is left as it is.

    Returns:
        The checkpoint written, or None when none was needed.

    Raises:
        AuditWriteError: the log's writer still runs, or the segment cannot be written.
        AuditDirError: the log cannot be read.
    """
    if writer_alive(log_dir.name):
        raise AuditWriteError(
            f"The process writing log {log_dir.name} is still running; only finished logs "
            "are upgraded (its own checkpoints are already tree checkpoints if it runs this "
            "version)."
        )
    leaves, checkpoints = read_log(log_dir)
    if not leaves or len(leaves) in checkpoints:
        return None
    prover = TreeProver(leaves)
    try:
        checkpoint = LogCheckpoint(
            log_dir.name,
            TreeCheckpoint.create(
                origin=audit_origin(log_dir.name),
                size=len(leaves),
                root=prover.tree.root(),
                signer=signer,
            ),
        )
    except NoteError as err:
        raise AuditWriteError(f"Cannot sign the checkpoint of {log_dir.name}: {err}") from None
    _, last = list_segments(log_dir)[-1]
    line = fast_encode({"checkpoint": checkpoint.to_dict()}) + b"\n"
    try:
        fd = os.open(last, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise AuditWriteError(f"Cannot append to {last}: {err.strerror}.") from None
    if anchors is not None:
        anchors.anchor(checkpoint)
    return checkpoint
