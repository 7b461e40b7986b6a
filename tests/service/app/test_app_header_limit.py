"""The request header size limit: 431 in the error shape and audited, at its exact boundary."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from service.app.header_limit import (
    MAX_HEADER_BYTES,
    PARSER_HEAD_BYTES,
    header_bytes,
    raise_parser_limit,
)
from service.app.http import HardeningMiddleware
from tests.service.app.harness import Stack, events_for


def test_header_size_counts_each_field_as_written() -> None:
    assert header_bytes([(b"host", b"x"), (b"x-pad", b"abc")]) == len(b"host: x\r\nx-pad: abc\r\n")
    assert header_bytes([]) == 0


def test_parser_buffers_heads_well_beyond_the_service_limit() -> None:
    from uvicorn.protocols.http import h11_impl

    import service.app.service  # noqa: F401  (raises the limit at import, in every worker)

    assert h11_impl.DEFAULT_MAX_INCOMPLETE_EVENT_SIZE == PARSER_HEAD_BYTES > MAX_HEADER_BYTES


def test_parser_limit_not_above_the_service_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="must exceed"):
        raise_parser_limit(MAX_HEADER_BYTES)


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("ok")(scope, receive, send)


def test_oversized_headers_that_cannot_be_audited_get_503_not_an_unaudited_431() -> None:
    def broken_audit(**_: Any) -> None:
        raise OSError("disk full")

    app = HardeningMiddleware(_ok, auditor=broken_audit, max_header_bytes=100)
    response = TestClient(app).get("/metadata", headers={"x-pad": "a" * 100})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"


def test_refusal_is_audited_with_the_route_name_never_the_raw_path() -> None:
    audited: list[dict[str, Any]] = []
    app = HardeningMiddleware(_ok, auditor=lambda **kw: audited.append(kw), max_header_bytes=100)
    client = TestClient(app)
    assert client.get("/metadata", headers={"x-pad": "a" * 100}).status_code == 431
    assert client.get("/eyJhbGciOiJFZERTQSJ9.x.y", headers={"x-pad": "a" * 100}).status_code == 431
    assert [(e["action"], e["status"]) for e in audited] == [
        ("metadata", 431),
        ("unknown_route", 431),
    ]


# -- the real server, with a raw socket ----------------------------------------------------


def send_head(
    stack: Stack, fields: list[tuple[str, str]], *, pieces: bool
) -> tuple[int, dict[str, str], bytes]:
    """Send ``GET /metadata`` with exactly ``fields``; return status, headers and body.

    With ``pieces`` the head goes out 1 KiB at a time, so the parser sees it incomplete
    (the case where uvicorn's own 16 KiB limit used to answer 400 or reset the connection).
    """
    head = b"GET /metadata HTTP/1.1\r\n"
    head += b"".join(f"{name}: {value}\r\n".encode() for name, value in fields) + b"\r\n"
    with stack.connect(timeout=20) as sock:
        if pieces:
            for start in range(0, len(head), 1024):
                sock.sendall(head[start : start + 1024])
                time.sleep(0.001)
        else:
            sock.sendall(head)
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {raw!r}"
            raw += chunk
        header_block, _, body = raw.partition(b"\r\n\r\n")
        lines = header_block.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            assert chunk
            body += chunk
    return int(lines[0].split()[1]), headers, body


def fields_of_size(stack: Stack, sub: str, size: int) -> list[tuple[str, str]]:
    """Host, a valid token and padding, totalling exactly ``size`` header bytes."""
    url = urlsplit(stack.url)
    fields = [
        ("Host", url.netloc),
        ("Authorization", stack.headers(sub, roles=("viewer",))["Authorization"]),
    ]
    used = header_bytes((n.encode(), v.encode()) for n, v in fields)
    pad = size - used - len("X-Pad") - 4
    assert pad > 0
    fields.append(("X-Pad", "a" * pad))
    assert header_bytes((n.encode(), v.encode()) for n, v in fields) == size
    return fields


@pytest.mark.system
@pytest.mark.parametrize("pieces", [False, True], ids=["at-once", "in-pieces"])
def test_largest_accepted_header_block_is_served(stack: Stack, pieces: bool) -> None:
    status, _, body = send_head(
        stack, fields_of_size(stack, "hdr-max", MAX_HEADER_BYTES), pieces=pieces
    )
    assert status == 200, body
    assert json.loads(body)["model"]["digest"] == stack.digest


@pytest.mark.system
@pytest.mark.parametrize("pieces", [False, True], ids=["at-once", "in-pieces"])
def test_header_block_one_byte_over_the_limit_gets_431_and_is_audited(
    stack: Stack, pieces: bool
) -> None:
    fields = fields_of_size(stack, "hdr-over", MAX_HEADER_BYTES + 1)
    status, headers, body = send_head(stack, fields, pieces=pieces)
    assert status == 431
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "headers_too_large"
    assert str(MAX_HEADER_BYTES) in error["message"]
    assert error["request_id"] == headers["x-request-id"]
    assert headers["x-content-type-options"] == "nosniff" and "server" not in headers
    events = events_for(stack.home, headers["x-request-id"])
    assert [(e["kind"], e["action"], e["status"], e["subject"]) for e in events] == [
        ("request", "metadata", 431, None)
    ]


@pytest.mark.system
def test_head_far_over_the_limit_sent_in_pieces_gets_431_not_a_reset(stack: Stack) -> None:
    fields = fields_of_size(stack, "hdr-far", PARSER_HEAD_BYTES - 1024)
    status, headers, body = send_head(stack, fields, pieces=True)
    assert status == 431, body
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert [e["status"] for e in events_for(stack.home, headers["x-request-id"])] == [431]
