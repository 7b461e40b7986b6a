"""Where a running stack is recorded: ``$ZTML_HOME/run/stack.json`` (for ``ztml down``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from service.stack.errors import StackError


@dataclass(frozen=True)
class ServerInfo:
    """One server of the stack: its process group, port and log file."""

    pid: int
    port: int
    log: str


@dataclass(frozen=True)
class StackState:
    """A running stack: both servers, the model it serves and where its state lives."""

    opa: ServerInfo
    service: ServerInfo
    model_digest: str
    home: str
    started: str
    detached: bool

    @property
    def service_url(self) -> str:
        """The model service's base URL."""
        return f"http://127.0.0.1:{self.service.port}"

    @property
    def opa_url(self) -> str:
        """The OPA server's base URL."""
        return f"https://127.0.0.1:{self.opa.port}"


def state_path(home: Path) -> Path:
    """Return the state file of the stack in ``home``."""
    return home / "run" / "stack.json"


def write_state(home: Path, state: StackState) -> Path:
    """Write the state file (0600)."""
    path = state_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(state), handle, indent=2)
    os.replace(tmp, path)
    return path


def read_state(home: Path) -> StackState | None:
    """Return the recorded stack, or None when there is none.

    Raises:
        StackError: the state file is unreadable.
    """
    path = state_path(home)
    try:
        data = json.loads(path.read_text())
        return StackState(
            opa=ServerInfo(**data["opa"]),
            service=ServerInfo(**data["service"]),
            model_digest=str(data["model_digest"]),
            home=str(data["home"]),
            started=str(data["started"]),
            detached=bool(data["detached"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StackError(
            f"The stack state file {path} is unreadable ({type(err).__name__}); stop the "
            f"servers it named by hand and delete it."
        ) from None


def clear_state(home: Path) -> None:
    """Remove the state file if present."""
    state_path(home).unlink(missing_ok=True)
