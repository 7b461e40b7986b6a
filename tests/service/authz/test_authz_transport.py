"""The OPA client's HTTP/1.1 response parser: what it accepts, and everything it refuses."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.authz.transport import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    HttpResponse,
    OpaProtocolError,
    ResponseParser,
)

BODY = json.dumps({"decision_id": "d-1", "result": {"allow": True, "reasons": []}}).encode()


def framed(body: bytes = BODY, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in ("Content-Type: application/json", *headers))
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def chunked(body: bytes, *, extension: str = "", trailer: str = "") -> bytes:
    parts = (body[:7], body[7:20], body[20:])
    data = b"".join(b"%x%s\r\n%b\r\n" % (len(p), extension.encode(), p) for p in parts if p)
    return framed(data + b"0\r\n" + trailer.encode() + b"\r\n", "Transfer-Encoding: chunked")


def parse(data: bytes, *, pieces: int = 1) -> HttpResponse | None:
    parser = ResponseParser()
    step = max(1, len(data) // pieces)
    result = None
    for start in range(0, len(data), step):
        got = parser.feed(data[start : start + step])
        if got is not None:
            assert result is None, "two responses from one"
            result = got
    return result


@pytest.mark.parametrize("pieces", [1, 2, 7, 10_000])
def test_content_length_answer_in_any_pieces(pieces: int) -> None:
    response = parse(framed(BODY, f"Content-Length: {len(BODY)}"), pieces=pieces)
    assert response == HttpResponse(200, BODY, keep_alive=True)


@pytest.mark.parametrize("pieces", [1, 3, 10_000])
def test_chunked_answer_with_extensions_and_trailers(pieces: int) -> None:
    data = chunked(BODY, extension=";name=value", trailer="X-Trailer: 1\r\n")
    response = parse(data, pieces=pieces)
    assert response is not None and response.body == BODY and response.keep_alive


def test_incomplete_answer_is_not_a_response() -> None:
    data = framed(BODY, f"Content-Length: {len(BODY)}")
    assert parse(data[:-1]) is None


def test_one_parser_reads_consecutive_answers() -> None:
    parser = ResponseParser()
    first = parser.feed(framed(b"{}", "Content-Length: 2"))
    second = parser.feed(chunked(BODY))
    assert first is not None and first.body == b"{}"
    assert second is not None and second.body == BODY


@pytest.mark.parametrize(
    ("extra", "version", "keep_alive"),
    [
        ((), "HTTP/1.1", True),
        (("Connection: close",), "HTTP/1.1", False),
        ((), "HTTP/1.0", False),
        (("Connection: keep-alive",), "HTTP/1.0", True),
    ],
)
def test_connection_reuse_follows_the_answer(
    extra: tuple[str, ...], version: str, keep_alive: bool
) -> None:
    data = framed(b"{}", "Content-Length: 2", *extra).replace(b"HTTP/1.1", version.encode(), 1)
    response = parse(data)
    assert response is not None and response.keep_alive is keep_alive


def test_error_status_is_returned_for_the_caller_to_deny() -> None:
    response = parse(framed(b"{}", "Content-Length: 2", status="500 Internal Server Error"))
    assert response is not None and response.status == 500


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(framed(BODY), id="no-framing"),
        pytest.param(framed(b"{}", "Content-Length: 2", "Content-Length: 3"), id="two-lengths"),
        pytest.param(framed(b"{}", "Content-Length: -2"), id="negative-length"),
        pytest.param(framed(b"{}", "Content-Length: 0x2"), id="hex-length"),
        pytest.param(framed(b"", f"Content-Length: {MAX_BODY_BYTES + 1}"), id="oversized"),
        pytest.param(framed(b"", "Transfer-Encoding: gzip"), id="other-coding"),
        pytest.param(framed(b"", "Transfer-Encoding: gzip, chunked"), id="coding-before-chunked"),
        pytest.param(
            framed(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked", "Content-Length: 2"),
            id="length-and-chunked",
        ),
        pytest.param(framed(b"zz\r\n", "Transfer-Encoding: chunked"), id="bad-chunk-size"),
        pytest.param(framed(b"0x2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), id="0x"),
        pytest.param(framed(b"+2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), id="plus"),
        pytest.param(framed(b"1_0\r\n" + b"x" * 16, "Transfer-Encoding: chunked"), id="under"),
        pytest.param(framed(b"2\r\n{}XX0\r\n\r\n", "Transfer-Encoding: chunked"), id="no-crlf"),
        pytest.param(
            framed(b"%x\r\n" % (MAX_BODY_BYTES + 1), "Transfer-Encoding: chunked"),
            id="oversized-chunk",
        ),
        pytest.param(framed(b"{}XX", "Content-Length: 2"), id="bytes-after"),
        pytest.param(
            framed(b"2\r\n{}\r\n0\r\n\r\nXX", "Transfer-Encoding: chunked"),
            id="bytes-after-chunked",
        ),
        pytest.param(framed(b"", status="100 Continue"), id="interim"),
        pytest.param(framed(b"{}", "Content-Length: 2", status="2OO OK"), id="bad-status"),
        pytest.param(b"SSH-2.0-OpenSSH\r\n\r\n", id="not-http"),
        pytest.param(framed(b"{}", "Content-Length: 2", " Folded: yes"), id="folded"),
        pytest.param(framed(b"{}", "Content-Length: 2", "No colon"), id="no-colon"),
        pytest.param(
            framed(b"", "X: " + "a" * MAX_HEAD_BYTES, "Content-Length: 0"), id="huge-head"
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: " + b"a" * (MAX_HEAD_BYTES + 1), id="endless-head"),
    ],
)
def test_refused_answers(data: bytes) -> None:
    with pytest.raises(OpaProtocolError):
        parse(data)


@given(st.binary(max_size=512), st.integers(min_value=1, max_value=64))
def test_any_bytes_give_a_response_none_or_a_protocol_error(data: bytes, pieces: int) -> None:
    with contextlib.suppress(OpaProtocolError):
        parse(data, pieces=pieces)


@given(st.binary(max_size=4096), st.integers(min_value=1, max_value=64))
def test_any_body_survives_either_framing_in_any_pieces(body: bytes, pieces: int) -> None:
    by_length = parse(framed(body, f"Content-Length: {len(body)}"), pieces=pieces)
    by_chunks = parse(chunked(body), pieces=pieces) if body else by_length
    assert by_length is not None and by_length.body == body
    assert by_chunks is not None and by_chunks.body == body
