"""The audit log's deterministic encoding and its record lines.

The provenance ledger hashes RFC 8785 (JCS) bytes. The audit log is on the request hot
path, so it uses a cheaper deterministic encoding, measured faster by
``benchmarks/audit_bench.py``::

    fast_encode(obj) = json.dumps(obj, sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False, allow_nan=False).encode("utf-8")

It is deterministic (and reproducible by any JSON library that can sort keys and print
Python's shortest float repr) because audit events hold only str, int, bool, null, lists
and dicts, plus ``latency_ms``, a finite float rounded to 3 decimals at append time.

A record is one line of a segment file, itself ``fast_encode`` of
``{"seq", "prev", "hash", "event"}``::

    {"event":{...},"hash":"<64 hex>","prev":"<64 hex>","seq":12}

with ``hash = link_hash(seq, prev, event, encode=fast_encode)``, i.e. the SHA-256 of
``{"body":{...},"prev":"<64 hex>","seq":12}``. Because both encodings sort their keys,
the event's bytes appear verbatim in both, so the writer encodes each event once and the
verifier hashes the bytes it read. A checkpoint line is ``fast_encode`` of
``{"checkpoint": Checkpoint.to_dict()}`` and is not itself part of the chain.
"""

from __future__ import annotations

import json
from typing import Any

_SORTING_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)

EVENT_PREFIX = b'{"event":'
CHECKPOINT_PREFIX = b'{"checkpoint":'


def fast_encode(obj: Any) -> bytes:
    """Return the audit log's deterministic encoding of ``obj`` (see the module docs)."""
    return _SORTING_ENCODER.encode(obj).encode("utf-8")


def link_input(seq: int, prev: str, event_bytes: bytes) -> bytes:
    """Return the bytes hashed to link record ``seq`` (``fast_encode`` of seq/prev/body)."""
    return b'{"body":%b,"prev":"%b","seq":%d}' % (event_bytes, prev.encode("ascii"), seq)


def record_line(seq: int, prev: str, digest: str, event_bytes: bytes) -> bytes:
    """Return a complete record line, newline included."""
    return b'{"event":%b,"hash":"%b","prev":"%b","seq":%d}\n' % (
        event_bytes,
        digest.encode("ascii"),
        prev.encode("ascii"),
        seq,
    )
