"""Mutual TLS to OPA: decisions with the stack's client certificate, none without it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.authz import OpaAuthorizer, PolicyUnavailableError
from service.stack.processes import free_port, start_process, stop_group
from tests.service.authz.policy_inputs import policy_input

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def mtls_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    import ssl

    from service.authn.tls import make_dev_ca
    from service.stack.runner import opa_command
    from service.toolchain.opa import find_opa
    from service.toolchain.paths import PROJECT_ROOT

    certs = make_dev_ca(tmp_path_factory.mktemp("tls"))
    port = free_port()
    command = opa_command(find_opa(), port, certs=certs)
    log = tmp_path_factory.mktemp("opa") / "opa.log"
    proc = start_process(command, log_path=log, env=dict(os.environ), cwd=PROJECT_ROOT)
    try:
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        import httpx

        def ready() -> bool:
            with httpx.Client(verify=context) as client:
                return client.get(f"https://127.0.0.1:{port}/health").status_code == 200

        for _ in range(120):
            with contextlib.suppress(httpx.HTTPError):
                if ready():
                    break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.25)
        yield f"https://127.0.0.1:{port}", certs
    finally:
        stop_group(proc.pid)


def decide(authorizer: OpaAuthorizer, doc: dict[str, Any]) -> Any:
    async def run() -> Any:
        try:
            return await authorizer.decide(doc)
        finally:
            await authorizer.close()

    return asyncio.run(run())


def sample_input() -> dict[str, Any]:
    return policy_input()


def test_service_with_client_certificate_gets_decisions(mtls_opa: tuple[str, Any]) -> None:
    from service.authz.tls import OpaTls

    url, certs = mtls_opa
    tls = OpaTls(ca_file=certs.ca_cert, cert_file=certs.client_cert, key_file=certs.client_key)
    authorizer = OpaAuthorizer(url, timeout_seconds=2.0, ssl_context=tls.context())
    assert decide(authorizer, sample_input()).allow


def test_client_without_certificate_gets_no_decision(mtls_opa: tuple[str, Any]) -> None:
    import ssl

    url, certs = mtls_opa
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    with pytest.raises(PolicyUnavailableError):
        decide(OpaAuthorizer(url, timeout_seconds=2.0, ssl_context=context), sample_input())


def test_tls_context_needs_an_https_url(tmp_path: Path) -> None:
    import ssl

    with pytest.raises(PolicyUnavailableError):
        OpaAuthorizer("http://127.0.0.1:1", ssl_context=ssl.create_default_context())
