"""OpaAuthorizer over a Unix domain socket: decisions, file permissions, fail-closed."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.authz import OpaAuthorizer, PolicyUnavailableError
from service.authz.opa import parse_opa_url
from service.stack.processes import free_port, start_process, stop_group, wait_ready
from tests.service.authz.policy_inputs import decide, policy_input

NOBODY = 65534


@dataclass
class SocketOpa:
    socket: Path
    health: str
    log: Path
    pid: int

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


def _start(directory: Path) -> SocketOpa:
    from service.stack.runner import opa_command
    from service.toolchain.opa import find_opa
    from service.toolchain.paths import PROJECT_ROOT

    port = free_port()
    sock = directory / "opa.sock"
    log = directory.parent / f"opa-{port}.log"
    proc = start_process(
        opa_command(find_opa(), port, socket=sock),
        log_path=log,
        env=dict(os.environ),
        cwd=PROJECT_ROOT,
    )
    health = f"http://127.0.0.1:{port}/health"
    wait_ready(health, process=proc, what="OPA", log_path=log, timeout=30)
    return SocketOpa(socket=sock, health=health, log=log, pid=proc.pid)


@pytest.fixture
def opa(tmp_path: Path) -> Iterator[SocketOpa]:
    directory = tmp_path / "opa"
    directory.mkdir(mode=0o700)
    server = _start(directory)
    try:
        yield server
    finally:
        stop_group(server.pid)


@pytest.mark.system
def test_decision_over_the_socket_is_opas(opa: SocketOpa) -> None:
    decision = decide(opa.url, policy_input())
    assert decision.allow
    assert decision.decision_id and not decision.decision_id.startswith("local-")


@pytest.mark.system
def test_socket_is_owner_only(opa: SocketOpa) -> None:
    mode = opa.socket.stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)


@pytest.mark.system
def test_another_local_user_cannot_connect_to_the_socket(opa: SocketOpa) -> None:
    # As root the test process bypasses file permissions: ask as an unprivileged user.
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('refused')\n"
        "else:\n"
        "    print('connected')\n"
    )
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    os.chmod(opa.socket.parent.parent, 0o755)  # the temp dir: traversable, as /run is
    result = subprocess.run(
        [sys.executable, "-c", probe, str(opa.socket)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.stdout.strip() == "refused", result.stderr


@pytest.mark.system
def test_killed_opa_denies_and_a_restarted_one_recovers(opa: SocketOpa) -> None:
    async def scenario() -> tuple[bool, type[BaseException] | None, bool]:
        authorizer = OpaAuthorizer(opa.url, timeout_seconds=2.0)
        try:
            before = (await authorizer.decide(policy_input())).allow
            stop_group(opa.pid)
            failure: type[BaseException] | None = None
            try:
                await authorizer.decide(policy_input())
            except PolicyUnavailableError as err:
                failure = type(err)
            restarted = _start(opa.socket.parent)
            opa.pid = restarted.pid
            after = (await authorizer.decide(policy_input())).allow
            return before, failure, after
        finally:
            await authorizer.close()

    before, failure, after = asyncio.run(scenario())
    assert before is True
    assert failure is PolicyUnavailableError
    assert after is True


def test_socket_path_that_is_not_there_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(PolicyUnavailableError):
        decide(f"unix://{tmp_path}/missing.sock", policy_input(), timeout=0.5)


def test_plain_socket_file_that_is_not_opa_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    try:
        with pytest.raises(PolicyUnavailableError):
            decide(f"unix://{path}", policy_input(), timeout=0.3)
    finally:
        server.close()


@pytest.mark.parametrize(
    "url", ["unix://relative.sock", "unix:relative", "unix://host/opa.sock", "ftp://x:1"]
)
def test_malformed_opa_urls_are_refused_with_the_forms_named(url: str) -> None:
    with pytest.raises(PolicyUnavailableError, match=r"unix:///|http\(s\)"):
        parse_opa_url(url)
