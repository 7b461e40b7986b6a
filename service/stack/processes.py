"""Start, watch and stop the stack's server processes, each in its own process group.

Each server runs in a new session (so a terminal's Ctrl-C reaches only ``ztml up``,
which then stops the servers in order) and is stopped by signalling its whole process
group: SIGTERM, a grace period, then SIGKILL for anything left, so no worker survives.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from service.stack.errors import PortInUseError, StackStartError
from service.stack.privileges import RunAs

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a loopback port that is free now (bound to port 0 and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, what: str) -> None:
    """Refuse a port another process listens on.

    Raises:
        PortInUseError: the port is taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"Port {port} on {LOOPBACK} (for {what}) is already in use. Stop what "
                    f"uses it (`ss -ltnp 'sport = :{port}'`) or choose another port."
                ) from None
            raise


def start_process(
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path,
    run_as: RunAs | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server in a new session with its output appended to ``log_path``.

    With ``run_as`` (``ztml up`` started as root) the server runs as that unprivileged
    user, with no supplementary groups.
    """
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity: dict[str, Any] = {}
    if run_as is not None:
        identity = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            **identity,
        )


def alive(pid: int) -> bool:
    """Return whether a process exists (and is not a zombie we own)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_ready(
    url: str,
    *,
    verify: ssl.SSLContext | bool = True,
    process: subprocess.Popen[bytes] | None,
    what: str,
    log_path: Path,
    timeout: float,
) -> None:
    """Poll ``url`` until it answers 200.

    Raises:
        StackStartError: the process exited, or the URL did not answer in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackStartError(
                f"{what} exited with code {process.returncode} while starting. "
                f"{last_lines(log_path)}See {log_path}."
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0, verify=verify).status_code == 200:
                return
        time.sleep(0.25)
    raise StackStartError(
        f"{what} did not become ready at {url} within {timeout:.0f} s. See {log_path}."
    )


def last_lines(log_path: Path, *, count: int = 3, marker: str = "ztml:") -> str:
    """Return the log's most telling lines (ours first, else the last ones) plus a space."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    ours = [line for line in lines if marker in line]
    chosen = ours[-count:] if ours else lines[-count:]
    return ("\n".join(chosen) + "\n") if chosen else ""


def group_members(pgid: int) -> list[int]:
    """Return the pids still alive in a process group."""
    import psutil

    members = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
    return members


def descendants(pid: int) -> list[int]:
    """Return the pids of a process's descendants (empty if it is gone)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def stop_group(pgid: int, *, grace_seconds: float = 20.0) -> None:
    """Stop a server: SIGTERM its process group, wait, then SIGKILL anything left.

    Descendants that moved to another process group are tracked too, so no worker
    survives its server.
    """
    import psutil

    family = [pgid, *descendants(pgid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
                pass
        if not group_members(pgid) and not any(alive(pid) for pid in family):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for pid in family:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
            pass
