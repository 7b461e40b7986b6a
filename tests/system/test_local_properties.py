"""Properties only the local stack (``ztml up``) has, checked with pytest-testinfra."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.system.targets import Target, listening

pytestmark = [pytest.mark.system, pytest.mark.slow]

testinfra_hosts = ["local://"]
NOBODY = 65534


def test_local_listeners_are_bound_to_loopback_only(host, target: Target):
    assert target.kind == "local"
    found = listening(host, target)
    assert found, "no listener of the stack was found"
    assert all(addr == "127.0.0.1" for addr, _ in found)


def _handshake(target: Target, context: ssl.SSLContext) -> str | None:
    assert target.local is not None
    port = target.local.state.service.port
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        return conn.version()


def test_service_handshake_with_the_stacks_ca_negotiates_tls13(target: Target):
    assert target.ca_file is not None, "ztml up serves TLS from its CA by default"
    assert _handshake(target, ssl.create_default_context(cafile=target.ca_file)) == "TLSv1.3"


def test_service_handshake_without_the_stacks_ca_fails_certificate_verification(
    target: Target,
):
    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        _handshake(target, ssl.create_default_context())


def test_plain_http_to_the_service_port_gets_no_answer(target: Target):
    plain = target.service_url.replace("https://", "http://") + "/livez"
    try:
        status = httpx.get(plain, timeout=10).status_code
    except httpx.HTTPError:
        status = None
    assert status in (None, 400)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
def test_another_local_user_cannot_connect_to_opas_socket(target: Target):
    assert target.local is not None
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
    path = Path(target.local.state.opa_socket)
    assert path.is_socket()
    result = subprocess.run(
        [sys.executable, "-c", probe, str(path)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.stdout.strip() == "refused", result.stderr
