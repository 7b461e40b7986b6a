"""Ledger records: their JSON form, hash link and signature.

A record is ``{"seq", "type", "time", "model_digest", "signer", "payload", "prev_hash",
"hash", "signature"}``. Its body is ``{"type", "time", "model_digest", "signer",
"payload"}``; ``hash = link_hash(seq, prev_hash, body)`` (RFC 8785 encoding) and
``signature`` is Ed25519 over the RFC 8785 bytes of the record without ``signature``
(so the signature covers ``seq``, ``prev_hash`` and ``hash`` too).

Both byte strings, and the stored text (the record's canonical JSON), embed the canonical
payload, so it is encoded once and spliced into the fixed-key envelopes (RFC 8785 is
compositional: an object is its sorted members).
A new record's payload is checked and copied in one walk and written by the C ``json``
encoder with sorted keys when that is RFC 8785 by construction (:func:`encode_payload`);
a stored record's by the same encoder when its output provably equals RFC 8785 (ASCII
only, so key order agrees, and no number whose Python form differs from ECMAScript's: no
exponent, no integral float, no run of 16+ digits). Anything else is encoded by
``rfc8785``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
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


@dataclass(frozen=True)
class _Fields:
    """The RFC 8785 bytes of a record's fields, each encoded once and spliced."""

    seq: bytes
    type: bytes
    time: bytes
    model_digest: bytes
    signer: bytes
    payload: bytes
    prev_hash: bytes

    def link(self) -> bytes:
        """The bytes the link hash covers: ``{"body", "prev", "seq"}``."""
        body = b"".join(
            (
                b'{"model_digest":',
                self.model_digest,
                b',"payload":',
                self.payload,
                b',"signer":',
                self.signer,
                b',"time":',
                self.time,
                b',"type":',
                self.type,
                b"}",
            )
        )
        return b"".join(
            (b'{"body":', body, b',"prev":', self.prev_hash, b',"seq":', self.seq, b"}")
        )

    def record(self, record_hash: bytes, signature: bytes | None = None) -> bytes:
        """The record's bytes: without ``signature`` those it signs, with it as stored."""
        signed = b"" if signature is None else b',"signature":' + signature
        return b"".join(
            (
                b'{"hash":',
                record_hash,
                b',"model_digest":',
                self.model_digest,
                b',"payload":',
                self.payload,
                b',"prev_hash":',
                self.prev_hash,
                b',"seq":',
                self.seq,
                signed,
                b',"signer":',
                self.signer,
                b',"time":',
                self.time,
                b',"type":',
                self.type,
                b"}",
            )
        )


def _fields(
    *,
    seq: int,
    record_type: str,
    time: str,
    model_digest: str | None,
    signer: dict[str, str],
    payload: dict[str, Any] | bytes,
    prev_hash: str,
) -> _Fields:
    """Encode a record's fields (``payload`` may be given already encoded).

    Raises:
        RecordSchemaError: a value cannot be canonically encoded.
    """
    try:
        return _Fields(
            seq=str(seq).encode(),
            type=_str(record_type),
            time=_str(time),
            model_digest=_str(model_digest),
            signer=_signer_bytes(signer),
            payload=payload if isinstance(payload, bytes) else canonical_bytes(payload),
            prev_hash=_str(prev_hash),
        )
    except (ValueError, TypeError, UnicodeError) as err:
        raise RecordSchemaError(f"record cannot be canonically encoded: {err}") from None


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
    fields = _fields(
        seq=seq,
        record_type=record_type,
        time=time,
        model_digest=model_digest,
        signer=signer,
        payload=payload,
        prev_hash=prev_hash,
    )
    try:
        hash_b = _str(record_hash)
    except (ValueError, TypeError, UnicodeError) as err:
        raise RecordSchemaError(f"record cannot be canonically encoded: {err}") from None
    return EncodedRecord(
        hash=hashlib.sha256(fields.link()).hexdigest(), signed_bytes=fields.record(hash_b)
    )


_CONTAINERS = (dict, list, tuple)


def _check_keys(value: dict[str, Any] | list[Any] | tuple[Any, ...]) -> None:
    """Refuse an object key that is not a string, at any depth (JSON has no other)."""
    items: Iterable[Any] = value
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
        items = value.values()
    for item in items:
        if isinstance(item, _CONTAINERS):
            _check_keys(item)


class _NotPlain(Exception):
    """A value :func:`_read_back` does not vouch for; ``rfc8785`` encodes it."""


def _read_back(value: Any) -> Any:
    """``value`` as its canonical JSON text reads back, for values the C encoder writes so.

    One walk checks what the C encoder's text cannot show and copies the value: objects
    (string keys only, members in sorted order, as the text has them), lists (from lists
    or tuples), strings, ``None``, booleans, integers within ±(2**53 - 1) and finite
    non-integral floats from 1e-4 to 1e16, whose ``repr`` is the ECMAScript form.
    Exact types only, so a subclass cannot change what is written.

    Raises:
        _NotPlain: anything else, for ``rfc8785`` to encode or refuse.
    """
    kind = type(value)
    if kind is str:
        return value
    if kind is dict:
        try:
            keys = sorted(value)
        except TypeError:  # keys of types that do not compare
            raise _NotPlain from None
        copy = {}
        for key in keys:
            if type(key) is not str:
                raise _NotPlain
            copy[key] = _read_back(value[key])
        return copy
    if kind is int:
        if -_SAFE_INT < value < _SAFE_INT:
            return value
        raise _NotPlain
    if kind is float:
        if 1e-4 <= abs(value) < 1e16 and not value.is_integer():
            return value
        raise _NotPlain
    if kind is list or kind is tuple:
        return [_read_back(item) for item in value]
    if value is None or kind is bool:
        return value
    raise _NotPlain


def encode_payload(payload: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Return the RFC 8785 bytes of a new record's payload and the payload they read back as.

    As strict as ``rfc8785`` itself: object keys must be strings, integers within
    ±(2**53 - 1), numbers finite, strings valid Unicode. One walk checks and copies the
    payload (:func:`_read_back`), and the C encoder writes the copy; its ASCII text is
    RFC 8785 by construction (sorted keys, compact, the same string escapes, numbers in
    their ECMAScript form), and the copy is what parsing the text would give. Any other
    payload is encoded by ``rfc8785``, which refuses an integer beyond 2**53 instead of
    writing it as a double, and its text is parsed back.

    Raises:
        RecordSchemaError: the payload cannot be canonically encoded.
    """
    try:
        try:
            copy = _read_back(payload)
            text = _ENCODER.encode(copy)
            if text.isascii():
                return text.encode(), copy
        except _NotPlain:
            pass
        _check_keys(payload)
        encoded = canonical_json(payload)
        return encoded, parse_json(encoded.decode())
    except (ValueError, TypeError) as err:  # rfc8785's errors are ValueErrors
        raise RecordSchemaError(
            f"payload is not canonical JSON ({err}): use strings, finite numbers "
            "(integers within ±2**53), booleans, null, lists and objects."
        ) from None


def create_record(
    *,
    seq: int,
    prev_hash: str,
    record_type: str,
    time: str,
    model_digest: str | None,
    payload: dict[str, Any],
    signer: Signer,
    encoded_payload: bytes | None = None,
) -> tuple[Record, str]:
    """Create a record and its stored text: link it at ``seq``, sign it with ``signer``.

    Every field is encoded once: the link hash, the signed bytes and the stored text
    (the record's canonical JSON) are spliced from the same bytes.

    Args:
        seq: The record's position.
        prev_hash: The hash of the record before it.
        record_type: The record's type.
        time: The record's time (RFC 3339 UTC).
        model_digest: The model digest, or None for an anchor.
        payload: The payload, as it will be read back from the stored text.
        signer: Who signs the record.
        encoded_payload: ``payload``'s canonical bytes, when the caller has them.

    Raises:
        RecordSchemaError: a value cannot be canonically encoded.
    """
    signer_ref = {"identity": signer.identity, "key_id": signer.key_id}
    fields = _fields(
        seq=seq,
        record_type=record_type,
        time=time,
        model_digest=model_digest,
        signer=signer_ref,
        payload=payload if encoded_payload is None else encoded_payload,
        prev_hash=prev_hash,
    )
    record_hash = hashlib.sha256(fields.link()).hexdigest()
    hash_b = b'"' + record_hash.encode() + b'"'
    signature = signer.sign_b64(fields.record(hash_b))
    record = Record(
        seq=seq,
        type=record_type,
        time=time,
        model_digest=model_digest,
        signer=signer_ref,
        payload=payload,
        prev_hash=prev_hash,
        hash=record_hash,
        signature=signature,
    )
    return record, fields.record(hash_b, b'"' + signature.encode() + b'"').decode()


def _parse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_parse_constant)


def parse_json(text: str) -> Any:
    """Parse JSON text strictly: NaN and Infinity are refused.

    Raises:
        ValueError: the text is not valid JSON.
    """
    return _DECODER.decode(text)


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
