"""Start and stop the local stack: the OPA server and the BentoML model service.

Both listen on 127.0.0.1 only. OPA loads ``policies/`` (without tests, examples and its
configuration) with ``policies/config/opa-config.yaml`` (decision logs with masking);
the service is ``bentoml serve service.app.service:ZtmlModelService`` (through
:mod:`service.app.serve`, see :func:`service_command`) configured by
environment variables (see :mod:`service.app.config`), pinned to the demo model's digest.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.authn.tls import DevCertificates, make_dev_ca
from service.stack.errors import StackRunningError, StackStartError
from service.stack.privileges import RunAs, check_reachable, hand_over, service_account
from service.stack.processes import (
    LOOPBACK,
    alive,
    ensure_port_free,
    free_port,
    start_process,
    stop_group,
    wait_ready,
)
from service.stack.state import ServerInfo, StackState, clear_state, read_state, write_state
from service.toolchain.opa import OPA_SERVER_ENV, OPA_STORE_FLAG
from service.toolchain.paths import POLICIES_DIR, PROJECT_ROOT

SERVICE_TARGET = "service.app.service:ZtmlModelService"


@dataclass(frozen=True)
class StackOptions:
    """How to run the stack."""

    home: Path
    model_path: Path
    model_digest: str
    port: int | None = None
    opa_port: int | None = None
    workers: int = 1
    detached: bool = False
    ready_timeout: float = 180.0
    extra_env: Mapping[str, str] | None = None


def tls_dir(home: Path) -> Path:
    """Where the stack keeps the CA and the OPA server / service client certificates."""
    return home / "tls"


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


def opa_client_env(certs: DevCertificates, port: int) -> dict[str, str]:
    """The service settings for mutual TLS to the stack's OPA."""
    return {
        "ZTML_OPA_URL": f"https://{LOOPBACK}:{port}",
        "ZTML_OPA_CA_FILE": str(certs.ca_cert),
        "ZTML_OPA_CERT_FILE": str(certs.client_cert),
        "ZTML_OPA_KEY_FILE": str(certs.client_key),
    }


def opa_client_context(certs: DevCertificates) -> ssl.SSLContext:
    """A TLS context that trusts the stack's CA and presents the service's certificate."""
    from service.authz.tls import OpaTls

    return OpaTls(certs.ca_cert, certs.client_cert, certs.client_key).context()


def service_command(port: int) -> list[str]:
    """Return the ``bentoml serve`` command line (via :mod:`service.app.serve`).

    :mod:`service.app.serve` is ``bentoml serve`` with the process supervisor's control
    endpoints on Unix sockets under ``$ZTML_HOME/run/circus`` instead of loopback TCP
    ports, so the API port is the only TCP port the service opens.
    """
    return [
        sys.executable,
        "-m",
        "service.app.serve",
        SERVICE_TARGET,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]


def service_env(options: StackOptions, opa_port: int, certs: DevCertificates) -> dict[str, str]:
    """Return the model service's environment (the configuration it reads at start)."""
    env = {
        **os.environ,
        "ZTML_HOME": str(options.home),
        "ZTML_MODEL_PATH": str(options.model_path),
        "ZTML_MODEL_DIGEST": options.model_digest,
        "ZTML_LEDGER_URL": str(options.home / "ledger.db"),
        **opa_client_env(certs, opa_port),
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


def _unprivileged_account(home: Path, opa: Path) -> RunAs | None:
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
    return account


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
    certs = make_dev_ca(tls_dir(home))
    run_as = _unprivileged_account(home, opa)
    opa_proc = start_process(
        opa_command(opa, opa_port, certs=certs),
        log_path=opa_log,
        env=_as(run_as, opa_env(os.environ), home),
        cwd=PROJECT_ROOT,
        run_as=run_as,
    )
    try:
        wait_ready(
            f"https://{LOOPBACK}:{opa_port}/health",
            verify=opa_client_context(certs),
            process=opa_proc,
            what="OPA",
            log_path=opa_log,
            timeout=30,
        )
        service_proc = start_process(
            service_command(port),
            log_path=service_log,
            env=_as(run_as, service_env(options, opa_port, certs), home),
            cwd=PROJECT_ROOT,
            run_as=run_as,
        )
    except BaseException:
        stop_group(opa_proc.pid)
        raise
    try:
        wait_ready(
            f"http://{LOOPBACK}:{port}/readyz",
            process=service_proc,
            what="The model service",
            log_path=service_log,
            timeout=options.ready_timeout,
        )
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
    )
    write_state(home, state)
    return state


def stop_stack(state: StackState) -> None:
    """Stop the service (so it writes its final audit checkpoint) and then OPA."""
    stop_group(state.service.pid)
    stop_group(state.opa.pid)
    clear_state(Path(state.home))


def watch(state: StackState, *, poll_seconds: float = 1.0) -> str | None:
    """Block while both servers run; return which one stopped (None never happens)."""
    while True:
        for name, info in (("model service", state.service), ("OPA", state.opa)):
            if not alive(info.pid):
                return name
        time.sleep(poll_seconds)


__all__ = [
    "StackOptions",
    "StackStartError",
    "check_not_running",
    "start_stack",
    "stop_stack",
    "watch",
]
