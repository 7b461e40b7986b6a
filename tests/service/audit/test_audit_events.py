import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.audit.encoding import fast_encode
from service.audit.errors import AuditEventError
from service.audit.events import (
    build_event,
    digest_input,
    encode_event,
    normalize_event,
    now_rfc3339,
)

MakeEvent = Callable[..., dict[str, Any]]
JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def test_valid_event_is_normalised_with_sorted_keys(make_event: MakeEvent):
    normal = normalize_event(make_event())
    assert list(normal) == sorted(normal)
    assert list(normal["decision"]) == ["allow", "decision_id", "reasons"]


def test_omitted_nullable_fields_become_null_and_time_defaults_to_now():
    normal = normalize_event(
        {"kind": "service", "request_id": "boot", "action": "start", "status": 0, "client": ""}
    )
    for name in ("subject", "tenant", "model_digest", "decision", "input_digest"):
        assert normal[name] is None
    assert normal["latency_ms"] == 0.0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", normal["time"])


@pytest.mark.parametrize(
    "field", ["token", "authorization", "input", "features", "Authorization", "inputs", "jwt"]
)
def test_a_field_that_would_log_raw_inputs_or_credentials_is_refused(
    make_event: MakeEvent, field: str
):
    with pytest.raises(AuditEventError, match="forbidden"):
        encode_event(make_event(**{field: "x"}))


def test_an_unknown_field_is_refused(make_event: MakeEvent):
    with pytest.raises(AuditEventError, match="not part of the audit event schema"):
        encode_event(make_event(note="hello"))


def test_an_unknown_decision_field_is_refused(make_event: MakeEvent):
    decision = {"allow": True, "reasons": [], "decision_id": None, "input": [0.1]}
    with pytest.raises(AuditEventError, match="unknown field"):
        encode_event(make_event(decision=decision))


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": JWT},
        {"request_id": "Bearer abc.def"},
        {"decision": {"allow": False, "reasons": [f"bad token {JWT}"], "decision_id": None}},
        {"client": "-----BEGIN PRIVATE KEY-----"},
    ],
)
def test_a_value_that_looks_like_a_credential_is_refused(
    make_event: MakeEvent, overrides: dict[str, Any]
):
    with pytest.raises(AuditEventError, match="credentials are never logged"):
        encode_event(make_event(**overrides))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "200"),
        ("status", True),
        ("status", 1000),
        ("latency_ms", math.nan),
        ("latency_ms", math.inf),
        ("latency_ms", -1.0),
        ("latency_ms", "5"),
        ("time", "2026-11-22 10:00:00"),
        ("time", "2026-11-22T10:00:00+02:00"),
        ("model_digest", "sha256:ABC"),
        ("input_digest", "md5:" + "0" * 32),
        ("kind", "login"),
        ("request_id", ""),
        ("request_id", None),
        ("action", 5),
        ("client", None),
        ("subject", ["alice"]),
        ("decision", {"allow": "yes", "reasons": []}),
        ("decision", {"allow": True, "reasons": "none"}),
        ("decision", {"allow": True, "reasons": [1]}),
        ("decision", "allow"),
        ("decision", "abc"),
        ("decision", {"allow": True, "reasons": [], "extra": 1}),
        ("decision", {"allow": True, "reasons": [], "decision_id": 5}),
    ],
)
def test_a_value_of_the_wrong_type_or_form_is_refused(
    make_event: MakeEvent, field: str, value: Any
):
    with pytest.raises(AuditEventError):
        encode_event(make_event(**{field: value}))


def test_a_non_dict_event_is_refused():
    with pytest.raises(AuditEventError, match="must be a dict"):
        encode_event(["not", "an", "event"])  # type: ignore[arg-type]


def test_an_overlong_string_is_refused(make_event: MakeEvent):
    with pytest.raises(AuditEventError, match="at most"):
        encode_event(make_event(subject="a" * 5000))


def test_a_lone_surrogate_is_refused(make_event: MakeEvent):
    with pytest.raises(AuditEventError, match="UTF-8"):
        encode_event(make_event(subject="\ud800"))


def test_latency_is_rounded_to_three_decimals(make_event: MakeEvent):
    assert normalize_event(make_event(latency_ms=1.23456789))["latency_ms"] == 1.235
    assert normalize_event(make_event(latency_ms=7))["latency_ms"] == 7.0


def test_build_event_checks_its_arguments():
    good = build_event(kind="drift", request_id="w-1", action="monitor", status=0, client="")
    assert good["kind"] == "drift"
    with pytest.raises(AuditEventError):
        build_event(kind="drift", request_id="w-1", action="monitor", status=0, client="", time="x")


def test_unchecked_event_once_checked_is_the_checked_event():
    fields: dict[str, Any] = {
        "request_id": "r-1",
        "action": "predict",
        "client": "10.0.0.7",
        "status": 403,
        "subject": "alice",
        "tenant": "demo",
        "model_digest": "sha256:" + "a" * 64,
        "input_digest": None,
        "decision": {"allow": False, "reasons": ["no"], "decision_id": "d-1"},
    }
    event = build_event(kind="policy_decision", check=False, **fields)
    assert event["time"] is None  # stamped when the log appends it
    normal = normalize_event(event)
    assert normal == {**build_event(kind="policy_decision", **fields), "time": normal["time"]}


def test_unchecked_event_is_refused_by_the_log_check_when_invalid():
    event = build_event(
        kind="request",
        check=False,
        request_id="r-1",
        action="predict",
        client="c",
        status=200,
        subject=JWT,
        tenant=None,
        model_digest=None,
        input_digest=None,
    )
    with pytest.raises(AuditEventError, match="token or key"):
        encode_event(event)


def test_digest_input_is_a_sha256_digest():
    digest = digest_input(b"\x00\x01")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert (
        normalize_event(
            {
                "kind": "request",
                "request_id": "r",
                "action": "a",
                "status": 200,
                "client": "c",
                "input_digest": digest,
            }
        )["input_digest"]
        == digest
    )


def test_now_is_rfc3339_utc():
    assert now_rfc3339().endswith("Z")


_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40).filter(
    lambda s: "earer" not in s and "eyJ" not in s and "PRIVATE KEY" not in s
)


@settings(max_examples=300, deadline=None)
@given(
    subject=st.none() | _text,
    tenant=st.none() | _text,
    request_id=_text.filter(bool),
    client=_text,
    reasons=st.lists(_text, max_size=4),
    allow=st.booleans(),
    decision_id=st.none() | _text,
    latency=st.floats(min_value=0, max_value=1e9, allow_nan=False) | st.integers(0, 10**6),
    status=st.integers(0, 999),
)
def test_the_hot_path_encoding_equals_fast_encode_of_the_normalised_event(
    subject: str | None,
    tenant: str | None,
    request_id: str,
    client: str,
    reasons: list[str],
    allow: bool,
    decision_id: str | None,
    latency: float,
    status: int,
):
    event = {
        "time": "2026-11-22T10:00:00Z",
        "kind": "policy_decision",
        "request_id": request_id,
        "subject": subject,
        "tenant": tenant,
        "action": "predict",
        "decision": {"allow": allow, "reasons": reasons, "decision_id": decision_id},
        "status": status,
        "latency_ms": latency,
        "client": client,
    }
    data = encode_event(event)
    normal = normalize_event(event)
    assert data == fast_encode(normal)
    assert json.loads(data) == normal
    assert b"\n" not in data
