"""The OPA client's connections (service.authz.transport): reused, recovered when OPA
drops them, and any unusable answer denies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.authz import OpaAuthorizer, PolicyUnavailableError
from service.stack.processes import free_port, start_process, stop_group, wait_ready
from tests.service.authz.policy_inputs import policy_input

ALLOW = {
    "decision_id": "d-1",
    "result": {
        "allow": True,
        "reasons": [],
        "obligations": {
            "max_batch_size": 8,
            "explanations_allowed": False,
            "flagged_input": "reject",
            "rate_limit_per_minute": 60,
        },
    },
}


class CountingProxy:
    """A TCP proxy in front of OPA that counts the connections it accepted.

    TLS passes through untouched, so each accepted connection is one TLS handshake.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def drop_all(self) -> None:
        """Close every proxied connection, as an OPA restart or idle timeout would."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.drop_all()
        if self._server is not None:
            self._server.close()


@pytest.fixture(scope="module")
def mtls_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, ssl.SSLContext]]:
    from service.authn.tls import make_dev_ca
    from service.authz.tls import OpaTls
    from service.stack.runner import opa_command
    from service.toolchain.opa import find_opa
    from service.toolchain.paths import PROJECT_ROOT

    certs = make_dev_ca(tmp_path_factory.mktemp("tls"))
    port = free_port()
    log = tmp_path_factory.mktemp("opa") / "opa.log"
    proc = start_process(
        opa_command(find_opa(), port, certs=certs),
        log_path=log,
        env=dict(os.environ),
        cwd=PROJECT_ROOT,
    )
    context = OpaTls(certs.ca_cert, certs.client_cert, certs.client_key).context()
    try:
        wait_ready(
            f"https://127.0.0.1:{port}/health",
            verify=context,
            process=proc,
            what="OPA",
            log_path=log,
            timeout=30,
        )
        yield port, context
    finally:
        stop_group(proc.pid)


def through_proxy(
    opa_port: int,
    context: ssl.SSLContext,
    scenario: Callable[[OpaAuthorizer, CountingProxy], Awaitable[Any]],
) -> Any:
    async def run() -> Any:
        proxy = CountingProxy(opa_port)
        await proxy.start()
        # The server certificate names 127.0.0.1, which the proxy's address also is.
        authorizer = OpaAuthorizer(
            f"https://127.0.0.1:{proxy.port}", timeout_seconds=2.0, ssl_context=context
        )
        try:
            return await scenario(authorizer, proxy)
        finally:
            await authorizer.close()
            await proxy.stop()

    return asyncio.run(run())


@pytest.mark.system
def test_decisions_reuse_one_mutual_tls_connection(
    mtls_opa: tuple[int, ssl.SSLContext],
) -> None:
    async def scenario(authorizer: OpaAuthorizer, proxy: CountingProxy) -> int:
        for _ in range(25):
            assert (await authorizer.decide(policy_input())).allow
        return proxy.accepted

    assert through_proxy(*mtls_opa, scenario) == 1


@pytest.mark.system
def test_connection_dropped_by_opa_while_idle_is_replaced_without_a_denial(
    mtls_opa: tuple[int, ssl.SSLContext],
) -> None:
    async def scenario(authorizer: OpaAuthorizer, proxy: CountingProxy) -> tuple[bool, int]:
        assert (await authorizer.decide(policy_input())).allow
        proxy.drop_all()
        await asyncio.sleep(0.2)
        allowed = (await authorizer.decide(policy_input())).allow
        return allowed, proxy.accepted

    allowed, accepted = through_proxy(*mtls_opa, scenario)
    assert allowed and accepted == 2


@pytest.mark.system
def test_connection_dropped_in_flight_denies_at_most_that_call(
    mtls_opa: tuple[int, ssl.SSLContext],
) -> None:
    async def scenario(authorizer: OpaAuthorizer, proxy: CountingProxy) -> list[bool | None]:
        assert (await authorizer.decide(policy_input())).allow
        proxy.drop_all()
        outcomes: list[bool | None] = []
        for _ in range(3):
            try:
                outcomes.append((await authorizer.decide(policy_input())).allow)
            except PolicyUnavailableError:
                outcomes.append(None)  # failed closed: a 503 for that call
        return outcomes

    first, *rest = through_proxy(*mtls_opa, scenario)
    assert first in (True, None)
    assert rest == [True, True]


@pytest.mark.system
def test_discarded_decision_is_never_read_and_later_calls_work(
    mtls_opa: tuple[int, ssl.SSLContext],
) -> None:
    async def scenario(authorizer: OpaAuthorizer, proxy: CountingProxy) -> bool:
        assert (await authorizer.decide(policy_input())).allow
        pending = await authorizer.submit(policy_input())
        await asyncio.sleep(0)  # the query is on its way
        pending.discard()
        with pytest.raises(PolicyUnavailableError, match="discarded"):
            await pending.decision()
        return (await authorizer.decide(policy_input())).allow

    assert through_proxy(*mtls_opa, scenario)


def answering(answer: bytes | None, connections: list[int] | None = None) -> Any:
    """A connection handler that sends ``answer`` to each request (None: never answers).

    Each accepted connection appends to ``connections``.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if connections is not None:
            connections.append(len(connections))
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                if answer is None:
                    await asyncio.sleep(30)  # never answers
                writer.write(answer)
                await writer.drain()

    return handle


def fake_opa(
    answer: bytes | None, tmp_path: Path, *, timeout: float = 1.0, calls: int = 1
) -> list[Any]:
    """Run ``calls`` decisions against a server that sends ``answer`` to each request."""

    async def run() -> list[Any]:
        server = await asyncio.start_server(answering(answer), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        authorizer = OpaAuthorizer(f"http://127.0.0.1:{port}", timeout_seconds=timeout)
        results: list[Any] = []
        try:
            for _ in range(calls):
                try:
                    results.append(await authorizer.decide(policy_input()))
                except PolicyUnavailableError as err:
                    results.append(err)
        finally:
            await authorizer.close()
            server.close()
        return results

    return asyncio.run(run())


def http(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    """An HTTP/1.1 answer as OPA would frame it (JSON), with the given extra headers."""
    head = "".join(f"{h}\r\n" for h in ("Content-Type: application/json", *headers))
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def test_chunked_answer_is_read(tmp_path: Path) -> None:
    body = json.dumps(ALLOW).encode()
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    answer = http(chunks + b"0\r\n\r\n", "Transfer-Encoding: chunked")
    results = fake_opa(answer, tmp_path, calls=2)
    assert all(not isinstance(r, Exception) and r.allow for r in results)


@pytest.mark.parametrize(
    "answer",
    [
        http(json.dumps(ALLOW).encode()),  # no framing
        http(json.dumps(ALLOW).encode(), "Content-Length: 5"),  # truncated JSON
        http(b"{}", "Content-Length: 2", status="500 Internal Server Error"),
        http(b"", "Content-Length: 99999999"),
        http(b"", "Transfer-Encoding: gzip"),
        http(b"zz\r\n", "Transfer-Encoding: chunked"),
        http(b"", "Content-Length: 2", "Content-Length: 3"),
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ],
    ids=[
        "unframed",
        "truncated",
        "http-500",
        "oversized",
        "unknown-encoding",
        "bad-chunk",
        "conflicting-lengths",
        "not-http",
    ],
)
def test_unusable_answer_denies(answer: bytes, tmp_path: Path) -> None:
    (result,) = fake_opa(answer, tmp_path, timeout=0.5)
    assert isinstance(result, PolicyUnavailableError)


def test_silent_opa_times_out_into_a_denial(tmp_path: Path) -> None:
    (result,) = fake_opa(None, tmp_path, timeout=0.2)
    assert isinstance(result, PolicyUnavailableError)
    assert "did not answer within 200 ms" in str(result)


@pytest.mark.system
def test_time_the_caller_computes_is_not_charged_to_opa(
    mtls_opa: tuple[int, ssl.SSLContext],
) -> None:
    import time

    port, context = mtls_opa

    async def run() -> bool:
        authorizer = OpaAuthorizer(
            f"https://127.0.0.1:{port}", timeout_seconds=0.2, ssl_context=context
        )
        try:
            await authorizer.decide(policy_input())  # connected
            pending = await authorizer.submit(policy_input())
            time.sleep(0.3)  # the caller computes (blocking) longer than OPA's timeout
            return (await pending.decision()).allow
        finally:
            await authorizer.close()

    assert asyncio.run(run())


def test_the_query_is_on_the_wire_when_submit_returns() -> None:
    """The caller computes while OPA evaluates: the request must already be sent."""
    import socket
    import threading
    import time

    received = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(body) < length:
                body += conn.recv(65536)
            received.set()
            conn.sendall(
                http(json.dumps(ALLOW).encode(), f"Content-Length: {len(json.dumps(ALLOW))}")
            )
            time.sleep(0.5)

    server = threading.Thread(target=serve, daemon=True)
    server.start()

    async def run() -> bool:
        authorizer = OpaAuthorizer(f"http://127.0.0.1:{port}", timeout_seconds=2.0)
        try:
            pending = await authorizer.submit(policy_input())
            time.sleep(0.3)  # the caller computes; this event loop does nothing meanwhile
            on_the_wire = received.is_set()
            assert (await pending.decision()).allow
            return on_the_wire
        finally:
            await authorizer.close()

    try:
        assert asyncio.run(run())
    finally:
        listener.close()


def test_a_cancelled_caller_takes_its_query_with_it() -> None:
    async def run() -> bool:
        received, closed = asyncio.Event(), asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                await reader.readuntil(b"\r\n\r\n")
                received.set()
                while await reader.read(65536):  # never answers; waits for the client to go
                    pass
            closed.set()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        authorizer = OpaAuthorizer(f"http://127.0.0.1:{port}", timeout_seconds=5.0)
        try:
            caller = asyncio.create_task(authorizer.decide(policy_input()))
            await asyncio.wait_for(received.wait(), timeout=5.0)  # out; OPA is silent
            caller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await caller
            await asyncio.wait_for(closed.wait(), timeout=1.0)
            return True
        finally:
            await authorizer.close()
            server.close()

    assert asyncio.run(run())


def test_discarding_an_answered_query_leaves_its_connection_to_the_next_query() -> None:
    """Once answered, a connection serves the next query: a late discard must not cut it."""
    answer = http(json.dumps(ALLOW).encode(), f"Content-Length: {len(json.dumps(ALLOW))}")

    async def run() -> tuple[bool, int]:
        accepted: list[int] = []
        server = await asyncio.start_server(answering(answer, accepted), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        authorizer = OpaAuthorizer(f"http://127.0.0.1:{port}", timeout_seconds=2.0)
        try:
            first = await authorizer.submit(policy_input())
            await asyncio.sleep(0.2)  # its answer arrives; the connection is idle again
            second = await authorizer.submit(policy_input())  # on the same connection
            first.discard()
            allowed = (await second.decision()).allow
            return allowed, len(accepted)
        finally:
            await authorizer.close()
            server.close()

    allowed, accepted = asyncio.run(run())
    assert allowed
    assert accepted == 1
