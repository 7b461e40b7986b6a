"""Canonical JSON for everything ztml hashes or signs.

RFC 8785 (JSON Canonicalization Scheme) via the ``rfc8785`` package: sorted keys, no
whitespace, ECMAScript number formatting, so any JCS implementation reproduces the bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_json(obj: Any) -> bytes:
    """Return the RFC 8785 canonical encoding of ``obj``."""
    return rfc8785.dumps(obj)


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
