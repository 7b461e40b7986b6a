"""Record encoding: the hash is the chain's link hash, the signature covers the record."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from service.chain import link_hash
from service.keys.canonical import canonical_json
from service.keys.store import Signer, TrustStore
from service.ledger import Ledger, verify_export_text
from service.ledger.errors import RecordSchemaError
from service.ledger.records import (
    canonical_bytes,
    create_record,
    encode_payload,
    encode_record,
    parse_json,
    record_from_json,
)


def test_hash_equals_chain_link_hash(ledger: Ledger, register: Any) -> None:
    record = register(1)
    assert record.hash == link_hash(record.seq, record.prev_hash, record.body())


def test_signature_covers_canonical_record_without_signature(
    ledger: Ledger, register: Any, trainer: Signer
) -> None:
    record = register(1)
    unsigned = record.to_dict()
    unsigned.pop("signature")
    TrustStore.from_public_keys([trainer.public_key]).verify_b64(
        record.key_id, record.signature, canonical_json(unsigned)
    )


def test_stored_form_is_canonical_json(ledger: Ledger, register: Any) -> None:
    record = register(1)
    assert record.to_json().encode() == canonical_json(json.loads(record.to_json()))


def test_numbers_outside_the_fast_range_round_trip(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    register(1, hyperparameters={"tiny": 1e-7, "whole": 2.0, "huge": 1e17, "neg": -0.0})
    text = json.dumps([r.to_dict() for r in ledger.records()])
    assert verify_export_text(text, trust).count == 1


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=6), _json, max_size=5))
def test_encoding_equals_rfc8785_and_link_hash(payload: dict[str, Any]) -> None:
    parsed = parse_json(canonical_json(payload).decode())
    assert canonical_bytes(payload) == canonical_json(payload)
    assert canonical_bytes(parsed) == canonical_json(payload)
    fields: dict[str, Any] = {
        "seq": 3,
        "record_type": "approve",
        "time": "2026-11-22T10:00:00Z",
        "model_digest": "sha256:" + "a" * 64,
        "signer": {"identity": "ü@x", "key_id": "ed25519:" + "0" * 16},
        "prev_hash": "b" * 64,
        "record_hash": "c" * 64,
    }
    encoded = encode_record(**fields, payload=payload)
    body = {
        "type": "approve",
        "time": fields["time"],
        "model_digest": fields["model_digest"],
        "signer": fields["signer"],
        "payload": payload,
    }
    assert encoded.hash == link_hash(3, "b" * 64, body)
    unsigned = {**body, "seq": 3, "prev_hash": "b" * 64, "hash": "c" * 64}
    assert encoded.signed_bytes == canonical_json(unsigned)


_ascii_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(min_value=-1e17, max_value=1e17)
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.text(st.characters(max_codepoint=127), max_size=8)
)
_ascii_json = st.recursive(
    _ascii_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None)
@given(
    payload=st.dictionaries(st.text(max_size=6), _json, max_size=5)
    | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=6), _ascii_json)
)
def test_payload_encoding_is_rfc8785_and_its_copy_is_the_text_read_back(
    payload: dict[str, Any],
) -> None:
    encoded, copy = encode_payload(payload)
    assert encoded == rfc8785.dumps(payload)
    parsed = parse_json(encoded.decode())
    assert copy == parsed
    assert json.dumps(copy) == json.dumps(parsed), "same types and member order"


def test_plain_payload_is_encoded_in_one_walk_without_rfc8785(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(value: Any) -> bytes:
        raise AssertionError("rfc8785 used")

    monkeypatch.setattr("service.ledger.records.canonical_json", refuse)
    payload = {"z": [1, 0.25, "a\n\u0001", None, True], "a": {"lr": 0.001, "seed": -7}}
    encoded, copy = encode_payload(payload)
    assert encoded == rfc8785.dumps(payload)
    assert list(copy) == ["a", "z"]


@pytest.mark.parametrize(
    "value",
    [
        [1.0],
        [[1e-7, 3]],
        1.0,
        -0.0,
        1e-7,
        1e16,
        1e21,
        2**53 - 1,
        0.1 + 0.2,
        123456.789,
        "é",
        {"é": 1, "z": 2},
    ],
)
def test_encoding_of_edge_numbers_and_text_equals_rfc8785(value: Any) -> None:
    assert canonical_bytes({"v": value, "s": "1.0e5"}) == canonical_json({"v": value, "s": "1.0e5"})


def test_integer_beyond_double_precision_is_refused(ledger: Ledger, register: Any) -> None:
    with pytest.raises(RecordSchemaError, match="not canonical JSON"):
        register(1, hyperparameters={"seed": 2**60})


def test_nan_is_not_json() -> None:
    with pytest.raises(RecordSchemaError, match="not valid JSON"):
        record_from_json('{"seq": NaN}')


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=12))
def test_string_encoding_equals_rfc8785(text: str) -> None:
    fields: dict[str, Any] = {
        "seq": 0,
        "record_type": "revoke",
        "time": "2026-11-22T10:00:00Z",
        "model_digest": "sha256:" + "a" * 64,
        "signer": {"identity": text or "x", "key_id": "ed25519:" + "0" * 16},
        "prev_hash": "0" * 64,
        "record_hash": text,
    }
    payload = {"reason": text, text: [text, 1.5]}
    unsigned = {
        "type": "revoke",
        "time": fields["time"],
        "model_digest": fields["model_digest"],
        "signer": fields["signer"],
        "payload": payload,
        "seq": 0,
        "prev_hash": "0" * 64,
        "hash": text,
    }
    assert encode_record(**fields, payload=payload).signed_bytes == canonical_json(unsigned)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.dictionaries(st.text(max_size=6), _json, max_size=5), identity=st.text(min_size=1)
)
def test_created_record_text_is_its_canonical_json(
    payload: dict[str, Any], identity: str, trainer: Signer
) -> None:
    signer = Signer(identity, trainer.private_key)
    record, text = create_record(
        seq=7,
        prev_hash="b" * 64,
        record_type="approve",
        time="2026-11-22T10:00:00Z",
        model_digest="sha256:" + "a" * 64,
        payload=payload,
        signer=signer,
    )
    assert text.encode() == canonical_json(record.to_dict())
    assert record_from_json(text) == record_from_json(record.to_json())


def test_appended_record_is_the_stored_record(ledger: Ledger, register: Any) -> None:
    record = register(1, hyperparameters={"whole": 2.0, "neg": -0.0, "seed": (1, 2)})
    assert record == ledger.head()
    assert record.payload["hyperparameters"] == {"whole": 2, "neg": 0, "seed": [1, 2]}


def test_appended_record_does_not_share_the_callers_payload(ledger: Ledger, register: Any) -> None:
    hyperparameters: dict[str, Any] = {"lr": 0.001}
    record = register(1, hyperparameters=hyperparameters)
    hyperparameters["lr"] = 0.5
    assert record.payload["hyperparameters"] == {"lr": 0.001}


@pytest.mark.parametrize(
    "hyperparameters",
    [
        {1: "one"},
        {"nested": [{"ok": {None: 1}}]},
        {"mixed": {1: 2, "a": 3}},
        {"nan": float("nan")},
        {"big": -(2**53)},
    ],
)
def test_payload_json_cannot_hold_exactly_is_refused(
    ledger: Ledger, register: Any, hyperparameters: dict[Any, Any]
) -> None:
    with pytest.raises(RecordSchemaError, match="not canonical JSON"):
        register(1, hyperparameters=hyperparameters)
    assert ledger.count() == 0
