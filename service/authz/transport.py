"""A small keep-alive HTTP/1.1 client for the one server the service asks: OPA.

Each worker keeps its (mutual) TLS connections to OPA open and reuses them, so a decision
costs one request/response on an established connection, never a TLS handshake. A
request is written to the socket at once (:meth:`OpaTransport.send`) and its answer read
later (:meth:`Exchange.response`), so the caller can compute while OPA evaluates.

Responses are read strictly: ``HTTP/1.x`` status line, framing by ``Content-Length`` or
chunked encoding only, bounded header and body sizes. Anything else raises
:class:`TransportError`, and a connection is reused only after a complete, well-framed
answer; the caller turns every error into a denial.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_IDLE = 16


class TransportError(Exception):
    """OPA's answer could not be read (closed, malformed or oversized)."""


@dataclass
class Connection:
    """One open connection to OPA."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: int = 0

    def usable(self) -> bool:
        """Whether the connection is still open in both directions."""
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        """Close the connection (no wait; safe on a closed loop)."""
        with contextlib.suppress(Exception):
            self.writer.close()


@dataclass
class Response:
    """A complete answer of OPA."""

    status: int
    body: bytes
    keep_alive: bool = field(default=True)


def _header_lines(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise TransportError("malformed status line")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise TransportError("malformed header line")
        key, value = name.lower(), value.strip()
        if key in headers and headers[key] != value:
            raise TransportError(f"conflicting {key.decode(errors='replace')} headers")
        headers[key] = value
    return int(parts[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        digits = line[:-2].split(b";", 1)[0].strip()
        try:
            length = int(digits, 16)
        except ValueError:
            raise TransportError("malformed chunk size") from None
        if length < 0 or size + length > MAX_BODY_BYTES:
            raise TransportError("response body too large")
        if length == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers are not used
            return b"".join(chunks)
        chunk = await reader.readexactly(length + 2)
        if chunk[-2:] != b"\r\n":
            raise TransportError("malformed chunk")
        chunks.append(chunk[:-2])
        size += length


async def read_response(reader: asyncio.StreamReader) -> Response:
    """Read one response from ``reader``.

    Raises:
        TransportError: the answer is malformed or too large.
        asyncio.IncompleteReadError: the connection closed before a whole answer.
        asyncio.LimitOverrunError: the header is longer than the reader's limit.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    status, headers = _header_lines(head)
    keep_alive = headers.get(b"connection", b"").lower() != b"close"
    encoding = headers.get(b"transfer-encoding")
    if encoding is not None:
        if encoding.lower() != b"chunked" or b"content-length" in headers:
            raise TransportError("unsupported transfer encoding")
        return Response(status, await _read_chunked(reader), keep_alive)
    length = headers.get(b"content-length")
    if length is None or not length.isdigit():
        raise TransportError("response without a valid Content-Length")
    if int(length) > MAX_BODY_BYTES:
        raise TransportError("response body too large")
    return Response(status, await reader.readexactly(int(length)), keep_alive)


class Exchange:
    """A request already written to OPA whose answer has not been read yet."""

    def __init__(
        self, transport: OpaTransport, connection: Connection, request: bytes, *, reused: bool
    ) -> None:
        self._transport = transport
        self._connection: Connection | None = connection
        self._request = request
        self._reused = reused

    async def response(self) -> Response:
        """Read the answer; the connection goes back to the pool after a complete one.

        A reused connection that OPA had closed (nothing at all came back) is replaced
        once by a new connection and the request sent again: a query has no side effect.

        Raises:
            TransportError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError:
                no usable answer (the connection is closed).
        """
        connection = self._connection
        if connection is None:
            raise TransportError("the exchange was already read or discarded")
        try:
            try:
                response = await read_response(connection.reader)
            except (asyncio.IncompleteReadError, ConnectionError) as err:
                stale = not isinstance(err, asyncio.IncompleteReadError) or not err.partial
                if not (self._reused and stale):
                    raise
                connection.close()
                connection = self._connection = await self._transport.open()
                connection.writer.write(self._request)
                response = await read_response(connection.reader)
        except BaseException:
            self.discard()
            raise
        self._connection = None
        connection.requests += 1
        if response.keep_alive:
            self._transport.release(connection)
        else:
            connection.close()
        return response

    def discard(self) -> None:
        """Drop the exchange unread: its connection is closed, never reused."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class OpaTransport:
    """Keep-alive connections from one event loop to one OPA server.

    Args:
        host: OPA's host name or address.
        port: OPA's port.
        ssl_context: TLS (and the client certificate) for an ``https`` OPA, else None.
    """

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._idle: list[Connection] = []
        self._host_header = f"{host}:{port}".encode()
        #: Connections opened so far (each one a TCP connect and, with TLS, a handshake).
        self.opened = 0

    async def open(self) -> Connection:
        """Open a new connection (TCP, then the TLS handshake when configured)."""
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl_context, limit=MAX_HEADER_BYTES
        )
        self.opened += 1
        return Connection(reader, writer)

    def release(self, connection: Connection) -> None:
        """Keep ``connection`` for the next request (or close it if enough are idle)."""
        if connection.usable() and len(self._idle) < MAX_IDLE:
            self._idle.append(connection)
        else:
            connection.close()

    def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        """Return the bytes of one HTTP/1.1 request."""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: ".encode()
            + self._host_header
            + b"\r\nAccept: application/json\r\n"
        )
        if body or method == "POST":
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        return head + b"\r\n" + body

    async def send(self, method: str, path: str, body: bytes = b"") -> Exchange:
        """Write a request on an idle (else a new) connection and return its exchange.

        Raises:
            OSError, ssl.SSLError: no connection could be opened.
        """
        request = self.request(method, path, body)
        reused = False
        connection = None
        while self._idle:
            candidate = self._idle.pop()
            if candidate.usable():
                connection, reused = candidate, True
                break
            candidate.close()
        if connection is None:
            connection = await self.open()
        connection.writer.write(request)
        return Exchange(self, connection, request, reused=reused)

    def idle(self) -> int:
        """Return how many open connections wait for the next request."""
        return len(self._idle)

    def abandon(self) -> None:
        """Drop every idle connection without waiting (its event loop may be gone)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def close(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.writer.wait_closed(), 0.5)
