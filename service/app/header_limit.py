r"""The request header size limit: 431 in the service's error shape, not a parser 400 or reset.

The HTTP/1.1 parser of BentoML's uvicorn is h11 (httptools is not installed, and BentoML
passes uvicorn no parser options). h11 refuses a request head only while it is still
incomplete and already larger than its buffer (16 KiB by default). Measured on the real
server before this module: a 17-70 KB head that arrived in one piece was served, the
same head sent in 1 KB pieces got a ``text/plain`` 400 or, with the client still sending,
a reset connection; nothing was audited.

The service's limit is :data:`MAX_HEADER_BYTES` of header fields, counted as each field
is normally written, ``name: value\r\n`` (the name, the value as the parser hands it
over, and 4 bytes), summed over all fields. :func:`raise_parser_limit` lets the parser
buffer up to :data:`PARSER_HEAD_BYTES` of request head, four times that, so every head
up to that size reaches the service's middleware whole, however it was sent; the
middleware answers one over the limit with 431 ``headers_too_large`` and an audit event
(:class:`~service.app.http.HardeningMiddleware`). A head beyond the parser's buffer is
still cut off by the parser (400, unaudited).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

_log = logging.getLogger(__name__)

#: The largest accepted total size of a request's header fields, in bytes.
MAX_HEADER_BYTES = 16 * 1024
#: What the HTTP parser buffers of an incomplete request head before it gives up.
PARSER_HEAD_BYTES = 64 * 1024
#: ``": "`` between name and value, ``"\r\n"`` after the value.
FIELD_OVERHEAD = 4


def header_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Return the size of header fields as the service counts it against its limit.

    Args:
        headers: The ASGI ``scope["headers"]``: (name, value) byte pairs.
    """
    return sum(len(name) + len(value) + FIELD_OVERHEAD for name, value in headers)


def raise_parser_limit(limit: int = PARSER_HEAD_BYTES) -> None:
    """Let uvicorn's h11 parser buffer ``limit`` bytes of an incomplete request head.

    uvicorn reads the module default when it sets up each connection, and BentoML builds
    its uvicorn configuration without the ``h11_max_incomplete_event_size`` option, so
    the default is what can be set; call this before the server accepts connections (the
    service module does at import, in every worker).

    Raises:
        ValueError: ``limit`` is not above :data:`MAX_HEADER_BYTES` (then heads the service
            should answer with 431 would be cut off by the parser first).
    """
    if limit <= MAX_HEADER_BYTES:
        raise ValueError(f"the parser's head limit {limit} must exceed {MAX_HEADER_BYTES}")
    from uvicorn.protocols.http import h11_impl

    if not hasattr(h11_impl, "DEFAULT_MAX_INCOMPLETE_EVENT_SIZE"):
        # A uvicorn that renamed it: heads above h11's own limit get its 400 again.
        _log.warning("cannot raise uvicorn's h11 head limit: its module default is gone")
        return
    h11_impl.DEFAULT_MAX_INCOMPLETE_EVENT_SIZE = limit
