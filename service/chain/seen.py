"""What each verifier remembers: the newest checkpoint it accepted, per log origin.

A log that is cut back to an older state can be internally consistent: its records,
hash chain and stored checkpoints all agree, they just end earlier. Only someone who saw
a later checkpoint can tell. So every verifier (``ztml ledger verify``, the deploy gate,
the service at start, the Pulumi program, ``ztml audit verify``) keeps the newest
checkpoint it accepted for each origin in a small JSON file (default
``$ZTML_HOME/seen-checkpoints.json``, mode 0600) and, next time, requires the log to be
consistent with it: a log now shorter than that checkpoint was truncated or rolled back;
one whose tree at that size has another root was rewritten.

The file maps each origin to the checkpoint's signed note. It only ever moves forward
(a smaller checkpoint never replaces a larger one) and is rewritten atomically under an
exclusive lock, so concurrent verifiers do not lose each other's updates.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path

from service.chain.errors import NoteError, ProofError
from service.chain.tlog import TreeCheckpoint
from service.toolchain.paths import ztml_home

SEEN_FILE = "seen-checkpoints.json"
_log = logging.getLogger(__name__)


def default_seen_path(home: Path | None = None) -> Path:
    """``$ZTML_SEEN_CHECKPOINTS`` if set, else ``<home>/seen-checkpoints.json``.

    Args:
        home: the state directory (default ``$ZTML_HOME``).
    """
    override = os.environ.get("ZTML_SEEN_CHECKPOINTS")
    if override and override != "off":
        return Path(override).expanduser()
    return (home or ztml_home()) / SEEN_FILE


def verifier_state(home: Path | None = None) -> SeenCheckpoints | None:
    """The kept checkpoints of a long-lived verifier (the service, the Pulumi program).

    ``ZTML_SEEN_CHECKPOINTS=off`` turns them off (a pod whose state is thrown away at
    each start gains nothing from them); that is logged as a warning, because a ledger
    rolled back to an older consistent state then goes unnoticed.
    """
    if os.environ.get("ZTML_SEEN_CHECKPOINTS") == "off":
        _log.warning(
            "UnsafeNoVerifierState: ZTML_SEEN_CHECKPOINTS=off; a ledger rolled back to an "
            "older consistent state is not detected"
        )
        return None
    return SeenCheckpoints(default_seen_path(home))


class SeenCheckpoints:
    """The newest checkpoint a verifier accepted, per origin, kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        """Use the file ``path`` (created on the first :meth:`remember`)."""
        self.path = Path(path)

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise NoteError(
                f"Cannot read the verifier's checkpoint file {self.path} ({err}); fix or "
                "remove it (removing it forgets what this verifier saw)."
            ) from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise NoteError(f"{self.path} is not a map of origins to checkpoint notes")
        return {str(k): v for k, v in data.items()}

    def get(self, origin: str) -> TreeCheckpoint | None:
        """The newest checkpoint accepted for ``origin``, or None.

        Raises:
            NoteError: the file or the stored note is unreadable.
        """
        note = self._read().get(origin)
        if note is None:
            return None
        checkpoint = TreeCheckpoint.parse(note)
        if checkpoint.origin != origin:
            raise NoteError(f"{self.path} holds a checkpoint of {checkpoint.origin} for {origin}")
        return checkpoint

    def remember(self, checkpoint: TreeCheckpoint) -> None:
        """Keep ``checkpoint`` if it is newer than the one kept for its origin.

        Raises:
            ProofError: a checkpoint of the same size with another root is kept (a fork).
            NoteError: the file cannot be read or written.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise NoteError(f"Cannot lock {lock_path}: {err.strerror}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._read()
            old_note = data.get(checkpoint.origin)
            if old_note is not None:
                old = TreeCheckpoint.parse(old_note)
                if old.size == checkpoint.size and old.root != checkpoint.root:
                    raise ProofError(
                        f"{checkpoint.origin}: two signed checkpoints of size {old.size} with "
                        "different roots: the log forked"
                    )
                if old.size > checkpoint.size or (
                    old.size == checkpoint.size
                    and len(checkpoint.note.signatures) <= len(old.note.signatures)
                ):
                    return
            data[checkpoint.origin] = checkpoint.text
            self._write(data)
        finally:
            os.close(fd)

    def _write(self, data: dict[str, str]) -> None:
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise NoteError(f"Cannot write {self.path}: {err.strerror}.") from None
