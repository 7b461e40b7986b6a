"""Ledger records: their JSON form, hash link and signature.

A record is ``{"seq", "type", "time", "model_digest", "signer", "payload", "prev_hash",
"hash", "signature"}``. Its body is ``{"type", "time", "model_digest", "signer",
"payload"}``; ``hash = link_hash(seq, prev_hash, body)`` (RFC 8785 encoding) and
``signature`` is Ed25519 over the RFC 8785 bytes of the record without ``signature``
(so the signature covers ``seq``, ``prev_hash`` and ``hash`` too).

Both byte strings embed the canonical payload, so it is encoded once and spliced into the
two fixed-key envelopes (RFC 8785 is compositional: an object is its sorted members).
The payload is first encoded by the C ``json`` encoder with sorted keys; that output is
used only when it provably equals RFC 8785 (ASCII only, so key order agrees, and no
number whose Python form differs from ECMAScript's: no exponent, no integral float, no
run of 16+ digits); anything else is encoded by ``rfc8785``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from service.keys.canonical import canonical_json
from service.keys.store import Signer
from service.ledger.errors import RecordSchemaError
from service.ledger.schema import (
    HEX64_RE,
    RECORD_FIELDS,
    RECORD_TYPES,
    check_int,
    check_object,
    check_signer,
    check_time,
)

_SAFE_INT = 2**53


@dataclass(frozen=True)
class Record:
    """One signed, hash-linked ledger record (see the module docstring)."""

    seq: int
    type: str
    time: str
    model_digest: str | None
    signer: dict[str, str]
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    signature: str

    @property
    def identity(self) -> str:
        """The signer's identity (e.g. ``trainer@host``)."""
        return self.signer["identity"]

    @property
    def key_id(self) -> str:
        """The signer's key id (``ed25519:<16 hex>``)."""
        return self.signer["key_id"]

    def to_dict(self) -> dict[str, Any]:
        """The exported JSON form of the record (see service/ledger/README.md)."""
        return {
            "seq": self.seq,
            "type": self.type,
            "time": self.time,
            "model_digest": self.model_digest,
            "signer": dict(self.signer),
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "signature": self.signature,
        }

    def to_json(self) -> str:
        """The canonical JSON text of the record (how it is stored)."""
        return canonical_bytes(self.to_dict()).decode()

    def body(self) -> dict[str, Any]:
        """The content fields the hash commits to."""
        return {
            "type": self.type,
            "time": self.time,
            "model_digest": self.model_digest,
            "signer": self.signer,
            "payload": self.payload,
        }

    def encoded(self) -> EncodedRecord:
        """Compute the link hash and the signed bytes of this record.

        Raises:
            RecordSchemaError: the record cannot be canonically encoded.
        """
        return encode_record(
            seq=self.seq,
            record_type=self.type,
            time=self.time,
            model_digest=self.model_digest,
            signer=self.signer,
            payload=self.payload,
            prev_hash=self.prev_hash,
            record_hash=self.hash,
        )


@dataclass(frozen=True)
class EncodedRecord:
    """The recomputed link hash of a record and the bytes its signature covers."""

    hash: str
    signed_bytes: bytes


_PLAIN_ASCII = re.compile(r"[ !#-\[\]-~]*")


def _str(value: str | None) -> bytes:
    # json.dumps escapes exactly what RFC 8785 escapes (", \\ and C0 controls, the same
    # short forms, lowercase \\u00xx); a lone surrogate fails in encode() in both.
    if value is None:
        return b"null"
    if _PLAIN_ASCII.fullmatch(value):
        return b'"' + value.encode() + b'"'
    return json.dumps(value, ensure_ascii=False).encode()


# In the compact json.dumps text of an object, a number token follows '":' (a member
# value), or '[' or ',' (a list element); the lookbehind keeps "sha256:0123..." out.
# Risky tokens: an exponent, an integral float ("1.0"), or 16+ digits (beyond 2**53).
# A match inside a string only costs a fallback to rfc8785, never a wrong encoding.
_RISKY_NUMBER = re.compile(
    r'[:,\[](?<=":|.,|.\[)-?(?:[0-9]+(?:(?:\.[0-9]+)?e|\.0(?![0-9]))|[0-9]{16})'
)
_BIG_INT = re.compile(r'[:,\[](?<=":|.,|.\[)-?[0-9]{16}')


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _signer_bytes(signer: dict[str, str]) -> bytes:
    if len(signer) == 2 and isinstance(signer.get("identity"), str):
        key_id = signer.get("key_id")
        if isinstance(key_id, str):
            return b'{"identity":' + _str(signer["identity"]) + b',"key_id":' + _str(key_id) + b"}"
    return canonical_bytes(signer)


def _as_doubles(value: Any) -> Any:
    """Integers beyond 2**53 as doubles (RFC 8785 writes 1e17 as 100000000000000000)."""
    if isinstance(value, dict):
        return {k: _as_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_doubles(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _SAFE_INT:
        return float(value)
    return value


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``: the C encoder's when provably identical, else rfc8785.

    JSON numbers are doubles, so an integer beyond 2**53 read back from JSON text is
    encoded as the double it denotes.
    """
    if not isinstance(value, dict):
        return canonical_json(value)
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError):
        return canonical_json(value)
    if text.isascii() and not _RISKY_NUMBER.search(text):
        return text.encode()
    return canonical_json(_as_doubles(value) if _BIG_INT.search(text) else value)


def encode_record(
    *,
    seq: int,
    record_type: str,
    time: str,
    model_digest: str | None,
    signer: dict[str, str],
    payload: dict[str, Any],
    prev_hash: str,
    record_hash: str,
) -> EncodedRecord:
    """Return the link hash and signed bytes for the given record fields.

    Raises:
        RecordSchemaError: a value cannot be canonically encoded (e.g. a lone surrogate,
            an integer beyond 2**53, a non-finite number).
    """
    try:
        payload_b = canonical_bytes(payload)
        signer_b = _signer_bytes(signer)
        type_b, time_b, digest_b = _str(record_type), _str(time), _str(model_digest)
        prev_b, seq_b = _str(prev_hash), str(seq).encode()
        body = b"".join(
            (
                b'{"model_digest":',
                digest_b,
                b',"payload":',
                payload_b,
                b',"signer":',
                signer_b,
                b',"time":',
                time_b,
                b',"type":',
                type_b,
                b"}",
            )
        )
        link = b"".join((b'{"body":', body, b',"prev":', prev_b, b',"seq":', seq_b, b"}"))
        signed = b"".join(
            (
                b'{"hash":',
                _str(record_hash),
                b',"model_digest":',
                digest_b,
                b',"payload":',
                payload_b,
                b',"prev_hash":',
                prev_b,
                b',"seq":',
                seq_b,
                b',"signer":',
                signer_b,
                b',"time":',
                time_b,
                b',"type":',
                type_b,
                b"}",
            )
        )
    except (ValueError, TypeError, UnicodeError) as err:
        raise RecordSchemaError(f"record cannot be canonically encoded: {err}") from None
    return EncodedRecord(hash=hashlib.sha256(link).hexdigest(), signed_bytes=signed)


def build_record(
    *,
    seq: int,
    prev_hash: str,
    record_type: str,
    time: str,
    model_digest: str | None,
    payload: dict[str, Any],
    signer: Signer,
) -> Record:
    """Create a record: link it to ``prev_hash`` at ``seq`` and sign it with ``signer``."""
    signer_ref = {"identity": signer.identity, "key_id": signer.key_id}
    fields: dict[str, Any] = {
        "seq": seq,
        "record_type": record_type,
        "time": time,
        "model_digest": model_digest,
        "signer": signer_ref,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    record_hash = encode_record(**fields, record_hash="").hash
    signed = encode_record(**fields, record_hash=record_hash).signed_bytes
    return Record(
        seq=seq,
        type=record_type,
        time=time,
        model_digest=model_digest,
        signer=signer_ref,
        payload=payload,
        prev_hash=prev_hash,
        hash=record_hash,
        signature=signer.sign_b64(signed),
    )


def _parse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def parse_json(text: str) -> Any:
    """Parse JSON text strictly: NaN and Infinity are refused.

    Raises:
        ValueError: the text is not valid JSON.
    """
    return json.loads(text, parse_constant=_parse_constant)


def record_from_dict(data: Any) -> Record:
    """Check the top-level shape of an exported record and return it as a :class:`Record`.

    The payload's type-specific schema is checked separately (:func:`check_payload`).

    Raises:
        RecordSchemaError: a field is missing, unexpected or of the wrong type.
    """
    check_object(data, "record", RECORD_FIELDS)
    seq = check_int(data["seq"], "seq")
    if seq >= _SAFE_INT:
        raise RecordSchemaError("seq: too large")
    if data["type"] not in RECORD_TYPES:
        raise RecordSchemaError(f"type: unknown record type {data['type']!r}")
    check_time(data["time"], "time")
    if data["model_digest"] is not None and not isinstance(data["model_digest"], str):
        raise RecordSchemaError("model_digest: must be a string or null")
    check_signer(data["signer"])
    check_object(data["payload"], "payload")
    for name in ("prev_hash", "hash"):
        if not isinstance(data[name], str) or not HEX64_RE.fullmatch(data[name]):
            raise RecordSchemaError(f"{name}: must be 64 lowercase hex digits")
    if not isinstance(data["signature"], str):
        raise RecordSchemaError("signature: must be a base64 string")
    return Record(
        seq=seq,
        type=data["type"],
        time=data["time"],
        model_digest=data["model_digest"],
        signer=data["signer"],
        payload=data["payload"],
        prev_hash=data["prev_hash"],
        hash=data["hash"],
        signature=data["signature"],
    )


def record_from_json(text: str) -> Record:
    """Parse one record from its JSON text.

    Raises:
        RecordSchemaError: not JSON, or not a record.
    """
    try:
        data = parse_json(text)
    except ValueError as err:
        raise RecordSchemaError(f"record is not valid JSON: {err}") from None
    return record_from_dict(data)
