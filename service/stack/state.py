"""Where a running stack is recorded: ``$ZTML_HOME/run/stack.json`` (for ``ztml down``)."""

from __future__ import annotations

import json
import os
import ssl
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
class ModelServer:
    """A model service of the stack beyond the demo model: one server per model.

    Attributes:
        name: The model's registered name (its route is ``/v1/models/<name>/...``).
        digest: The weights digest the server is pinned to.
        path: The model package directory.
        pid: The server's process group.
        port: Its port on 127.0.0.1.
        log: Its log file.
    """

    name: str
    digest: str
    path: str
    pid: int
    port: int
    log: str


@dataclass(frozen=True)
class StackState:
    """A running stack: both servers, the model it serves and where its state lives.

    Attributes:
        opa: OPA's process group, its diagnostic port (``/health``) and log.
        opa_socket: OPA's API socket.
        scheme: ``https``, or ``http`` when plain HTTP was asked for.
        ca_file: The CA certificate that verifies the service (None: an operator's
            certificate, or plain HTTP).
        client_auth: Whether callers need a client certificate.
        models: The servers of the models given with ``ztml up --model``, one per model.
    """

    opa: ServerInfo
    service: ServerInfo
    model_digest: str
    home: str
    started: str
    detached: bool
    opa_socket: str = ""
    scheme: str = "https"
    ca_file: str | None = None
    client_auth: str = "off"
    models: tuple[ModelServer, ...] = ()

    @property
    def service_url(self) -> str:
        """The model service's base URL."""
        return f"{self.scheme}://127.0.0.1:{self.service.port}"

    def model_url(self, server: ModelServer) -> str:
        """The base URL of one model's routes, ``.../v1/models/<name>``."""
        return f"{self.scheme}://127.0.0.1:{server.port}/v1/models/{server.name}"

    def servers(self) -> list[tuple[str, ServerInfo]]:
        """Every server of the stack by what it is: the model services, then OPA."""
        named = [("model service", self.service)]
        named += [
            (f"model service {m.name}", ServerInfo(pid=m.pid, port=m.port, log=m.log))
            for m in self.models
        ]
        return [*named, ("OPA", self.opa)]

    @property
    def opa_url(self) -> str:
        """OPA's API (a Unix domain socket)."""
        return f"unix://{self.opa_socket}"

    def caller_context(self) -> ssl.SSLContext | bool:
        """How a local client verifies the service (an ``httpx`` ``verify`` value).

        A context trusting the stack's CA, presenting the stack's own client certificate
        when the service requires one; ``True`` (the system's CAs) for an operator's
        certificate or plain HTTP.
        """
        if self.ca_file is None:
            return True
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_auth == "required":
            tls = Path(self.ca_file).parent
            context.load_cert_chain(str(tls / "client.pem"), str(tls / "client.key"))
        return context


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
            opa_socket=str(data.get("opa_socket", "")),
            scheme=str(data.get("scheme", "https")),
            ca_file=data.get("ca_file"),
            client_auth=str(data.get("client_auth", "off")),
            models=tuple(ModelServer(**m) for m in data.get("models", ())),
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
