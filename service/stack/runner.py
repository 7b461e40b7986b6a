"""Start and stop the local stack: the OPA server and the BentoML model service.

The service listens on 127.0.0.1 only, with TLS (:func:`service_tls`): a server
certificate from the stack's local CA in ``$ZTML_HOME/tls`` (made at the first start), or
the operator's own pair; plain HTTP only when asked for by name. OPA's API is a Unix
domain socket, ``$ZTML_HOME/run/opa/opa.sock`` (0600, in a 0700 directory, both owned by
the user the servers run as), so only the service's user can ask it for decisions; its
read-only diagnostics (``/health``, ``/metrics``) stay on a loopback port for the
readiness check. OPA loads ``policies/`` (without tests, examples and its configuration)
with ``policies/config/opa-config.yaml`` (decision logs with masking); the service is
``bentoml serve service.app.service:ZtmlModelService`` (through :mod:`service.app.serve`,
see :func:`service_command`) configured by environment variables (see
:mod:`service.app.config`), pinned to the demo model's digest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.authn.tls import DevCertificates
from service.stack.errors import StackRunningError, StackStartError
from service.stack.privileges import (
    RunAs,
    check_reachable,
    check_readable_tree,
    hand_over,
    service_account,
)
from service.stack.processes import (
    LOOPBACK,
    alive,
    ensure_port_free,
    free_port,
    start_process,
    stop_group,
    wait_ready,
)
from service.stack.state import (
    ModelServer,
    ServerInfo,
    StackState,
    clear_state,
    read_state,
    write_state,
)
from service.stack.tls import ClientAuth, ServiceTls, caller_context, service_tls, service_tls_env
from service.toolchain.opa import OPA_SERVER_ENV, OPA_STORE_FLAG
from service.toolchain.paths import POLICIES_DIR, PROJECT_ROOT

SERVICE_TARGET = "service.app.service:ZtmlModelService"
#: Settings the stack sets for the service itself; inherited values would contradict them.
_STACK_SETTINGS = (
    "ZTML_TLS_",
    "ZTML_INSECURE_PLAIN_HTTP",
    "ZTML_OPA_URL",
    "ZTML_OPA_CA_FILE",
    "ZTML_OPA_CERT_FILE",
    "ZTML_OPA_KEY_FILE",
)
#: The longest path a Unix domain socket may have (sun_path holds 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class ServedPackage:
    """A model package ``ztml up --model`` serves beside the demo model.

    Attributes:
        name: The name its contract declares (the route's ``<name>``).
        path: The package directory.
        digest: Its weights digest (the ledger's model digest).
    """

    name: str
    path: Path
    digest: str


@dataclass(frozen=True)
class StackOptions:
    """How to run the stack.

    Attributes:
        tls_cert: The operator's server certificate (PEM) for the service port, with
            ``tls_key``; by default the stack's local CA issues one.
        tls_key: Its private key (PEM).
        client_ca: CA certificates that may sign callers' client certificates.
        client_auth: Whether callers must present a client certificate (``off``,
            ``optional``, ``required``).
        insecure_plain_http: Serve plain HTTP instead of TLS (tokens in the clear).
        models: Further model packages, each served by its own model service (its own
            server process, port, log and verified model) behind the same OPA.
        service_target: The BentoML service to serve (``module:Class``): ztml's own, or
            a service wrapped by :func:`service.app.protect.protect`.
    """

    home: Path
    model_path: Path
    model_digest: str
    port: int | None = None
    opa_port: int | None = None
    workers: int = 1
    detached: bool = False
    ready_timeout: float = 180.0
    extra_env: Mapping[str, str] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    client_auth: ClientAuth = "off"
    insecure_plain_http: bool = False
    models: tuple[ServedPackage, ...] = ()
    service_target: str = SERVICE_TARGET


def opa_socket(home: Path) -> Path:
    """Where OPA's API listens: a Unix domain socket in a directory only its user may open."""
    return home / "run" / "opa" / "opa.sock"


def opa_command(
    opa: Path,
    port: int,
    *,
    certs: DevCertificates | None = None,
    socket: Path | None = None,
) -> list[str]:
    """Return the OPA server command line.

    With ``socket``, OPA's API listens only on that Unix domain socket (mode 0600: only
    OPA's own user, which is the service's, may connect) and ``port`` serves the
    read-only diagnostic API (``/health``, ``/metrics``). With ``certs``, HTTPS with
    client certificates: with ``--authentication=tls`` OPA completes a TLS handshake only
    with clients whose certificate the stack's CA signed.
    """
    from service.authz.provenance import policy_load_args

    if socket is not None and certs is not None:
        raise ValueError("OPA listens on a Unix socket or on TLS, not both")
    listen = ["--addr", f"{LOOPBACK}:{port}"]
    if socket is not None:
        listen = [
            "--addr",
            f"unix://{socket}",
            "--unix-socket-perm=600",
            "--diagnostic-addr",
            f"{LOOPBACK}:{port}",
        ]
    tls: list[str] = []
    if certs is not None:
        tls = [
            "--tls-cert-file",
            str(certs.server_cert),
            "--tls-private-key-file",
            str(certs.server_key),
            "--tls-ca-cert-file",
            str(certs.ca_cert),
            "--authentication=tls",
            "--min-tls-version=1.3",
        ]
    return [
        str(opa),
        "run",
        "--server",
        *listen,
        *tls,
        "--config-file",
        str(POLICIES_DIR / "config" / "opa-config.yaml"),
        OPA_STORE_FLAG,
        *policy_load_args(POLICIES_DIR),
    ]


def opa_env(base: Mapping[str, str]) -> dict[str, str]:
    """Return OPA's environment: ``base`` with ztml's Go runtime settings for OPA.

    The settings (``OPA_SERVER_ENV`` in service/toolchain/opa.py, which says why) are
    the cluster sidecar's too.
    """
    return {**base, **OPA_SERVER_ENV}


def service_command(port: int, *, target: str = SERVICE_TARGET) -> list[str]:
    """Return the ``bentoml serve`` command line (via :mod:`service.app.serve`).

    :mod:`service.app.serve` is ``bentoml serve`` with the process supervisor's control
    endpoints on Unix sockets under ``$ZTML_HOME/run/circus`` instead of loopback TCP
    ports, so the API port is the only TCP port the service opens.
    """
    return [
        sys.executable,
        "-m",
        "service.app.serve",
        target,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]


def service_env(
    options: StackOptions, tls: ServiceTls | None, package: ServedPackage | None = None
) -> dict[str, str]:
    """Return a model service's environment (the configuration it reads at start).

    Without ``package`` that is the demo model's service; with it, the service of that
    package.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_STACK_SETTINGS)}
    env = {
        **inherited,
        "ZTML_HOME": str(options.home),
        "ZTML_MODEL_PATH": str(options.model_path if package is None else package.path),
        "ZTML_MODEL_DIGEST": options.model_digest if package is None else package.digest,
        "ZTML_LEDGER_URL": str(options.home / "ledger.db"),
        "ZTML_OPA_URL": f"unix://{opa_socket(options.home)}",
        **service_tls_env(tls),
        "ZTML_WORKERS": str(options.workers),
        "BENTOML_HOME": str(options.home / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(options.extra_env or {})
    return env


def logs_dir(home: Path) -> Path:
    """Return where the servers' logs go."""
    return home / "logs"


def check_not_running(home: Path) -> None:
    """Refuse to start a second stack in the same ZTML_HOME; forget a dead one.

    Raises:
        StackRunningError: a recorded stack is still running.
    """
    state = read_state(home)
    if state is None:
        return
    if alive(state.service.pid) or alive(state.opa.pid):
        raise StackRunningError(
            f"A ztml stack is already running from {home} (service on {state.service_url}, "
            f"OPA pid {state.opa.pid}). Stop it with `ztml down` first."
        )
    clear_state(home)


def _unprivileged_account(
    home: Path, opa: Path, packages: tuple[ServedPackage, ...] = ()
) -> RunAs | None:
    """As root, return the account the servers run as, after handing ``home`` to it.

    Raises:
        StackError: the account cannot be created or cannot reach what the servers need.
    """
    account = service_account()
    if account is None:
        return None
    check_reachable(
        account,
        {
            "directory holding ZTML_HOME": home.parent,  # home itself is handed over
            "Python interpreter": Path(sys.executable),
            "project": PROJECT_ROOT,
            "OPA binary": opa,
        },
    )
    hand_over(home, account)
    # After the hand-over: a package inside ZTML_HOME is reachable through it.
    check_reachable(account, {f"model package {p.name}": p.path for p in packages})
    for package in packages:
        check_readable_tree(account, f"model package {package.name}", package.path)
    return account


def _prepare_socket_dir(home: Path) -> Path:
    """Create OPA's socket directory (0700) with no stale socket in it; return the path.

    Raises:
        StackStartError: the socket's path is too long for a Unix domain socket.
    """
    sock = opa_socket(home)
    if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
        raise StackStartError(
            f"OPA's socket path {sock} is longer than {MAX_SOCKET_PATH} bytes, the limit of a "
            "Unix domain socket: choose a shorter ZTML_HOME."
        )
    sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(sock.parent, 0o700)
    sock.unlink(missing_ok=True)  # left by an OPA that was killed; none runs now
    return sock


def _as(run_as: RunAs | None, env: dict[str, str], home: Path) -> dict[str, str]:
    """A server's environment; one run as the service account gets ZTML_HOME as HOME."""
    return env if run_as is None else {**env, "HOME": str(home), "USER": run_as.name}


def start_stack(options: StackOptions) -> StackState:
    """Start OPA and the model service and wait until both are ready.

    Raises:
        ToolMissingError: OPA is not installed (the message says how to get it).
        PortInUseError: a requested port is taken.
        StackStartError: a server failed to start; the message quotes its log.
    """
    from service.toolchain.opa import find_opa

    home = options.home
    check_not_running(home)
    opa = find_opa()
    opa_port = options.opa_port or free_port()
    port = options.port or free_port()
    ensure_port_free(opa_port, "OPA")
    ensure_port_free(port, "the model service")
    logs = logs_dir(home)
    opa_log, service_log = logs / "opa.log", logs / "service.log"
    tls = service_tls(
        options.home,
        tls_cert=options.tls_cert,
        tls_key=options.tls_key,
        client_ca=options.client_ca,
        client_auth=options.client_auth,
        insecure_plain_http=options.insecure_plain_http,
    )
    sock = _prepare_socket_dir(home)
    run_as = _unprivileged_account(home, opa, options.models)
    opa_proc = start_process(
        opa_command(opa, opa_port, socket=sock),
        log_path=opa_log,
        env=_as(run_as, opa_env(os.environ), home),
        cwd=PROJECT_ROOT,
        run_as=run_as,
    )
    try:
        wait_ready(
            f"http://{LOOPBACK}:{opa_port}/health",
            process=opa_proc,
            what="OPA",
            log_path=opa_log,
            timeout=30,
        )
        service_proc = start_process(
            service_command(port, target=options.service_target),
            log_path=service_log,
            env=_as(run_as, service_env(options, tls), home),
            cwd=PROJECT_ROOT,
            run_as=run_as,
        )
    except BaseException:
        stop_group(opa_proc.pid)
        raise
    scheme = "http" if tls is None else "https"
    try:
        wait_ready(
            f"{scheme}://{LOOPBACK}:{port}/readyz",
            verify=True if tls is None else caller_context(tls),
            process=service_proc,
            what="The model service",
            log_path=service_log,
            timeout=options.ready_timeout,
        )
        extra = _start_packages(options, tls, run_as, scheme)
    except BaseException:
        stop_group(service_proc.pid)
        stop_group(opa_proc.pid)
        raise
    state = StackState(
        opa=ServerInfo(pid=opa_proc.pid, port=opa_port, log=str(opa_log)),
        service=ServerInfo(pid=service_proc.pid, port=port, log=str(service_log)),
        model_digest=options.model_digest,
        home=str(home),
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        detached=options.detached,
        opa_socket=str(sock),
        scheme=scheme,
        ca_file=str(tls.ca) if tls is not None and tls.ca is not None else None,
        client_auth=tls.client_auth if tls is not None else "off",
        models=extra,
    )
    write_state(home, state)
    return state


def _start_packages(
    options: StackOptions, tls: ServiceTls | None, run_as: RunAs | None, scheme: str
) -> tuple[ModelServer, ...]:
    """Start one model service per package and wait until each is ready.

    Each runs its own ``bentoml serve`` (own process, port and log) and passes the deploy
    gate for its own model; one that refuses stops the start, naming its log.
    """
    home = options.home
    started: list[tuple[ModelServer, subprocess.Popen[bytes]]] = []
    try:
        for package in options.models:  # all start at once; each loads its own model
            port = free_port()
            log = logs_dir(home) / f"service-{package.name}.log"
            proc = start_process(
                service_command(port),
                log_path=log,
                env=_as(run_as, service_env(options, tls, package), home),
                cwd=PROJECT_ROOT,
                run_as=run_as,
            )
            server = ModelServer(
                name=package.name,
                digest=package.digest,
                path=str(package.path),
                pid=proc.pid,
                port=port,
                log=str(log),
            )
            started.append((server, proc))
        for server, proc in started:
            wait_ready(
                f"{scheme}://{LOOPBACK}:{server.port}/readyz",
                verify=True if tls is None else caller_context(tls),
                process=proc,
                what=f"The model service of {server.name}",
                log_path=Path(server.log),
                timeout=options.ready_timeout,
            )
    except BaseException:
        for server, _ in started:
            stop_group(server.pid)
        raise
    return tuple(server for server, _ in started)


def stop_stack(state: StackState) -> None:
    """Stop the model services (each writes its final audit checkpoint), then OPA."""
    for server in state.models:
        stop_group(server.pid)
    stop_group(state.service.pid)
    stop_group(state.opa.pid)
    clear_state(Path(state.home))


def watch(state: StackState, *, poll_seconds: float = 1.0) -> str | None:
    """Block while every server runs; return which one stopped (None never happens)."""
    while True:
        for name, info in state.servers():
            if not alive(info.pid):
                return name
        time.sleep(poll_seconds)


__all__ = [
    "ServedPackage",
    "StackOptions",
    "StackStartError",
    "check_not_running",
    "start_stack",
    "stop_stack",
    "watch",
]
