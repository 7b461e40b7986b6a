"""The request body: decoded and sanitized, its problem kept until the policy decided."""

from __future__ import annotations

import json

import pytest

from service.app.inputs import Parsed, explanation_method, parse_body
from service.app.responses import ApiError
from service.authz import Decision, Obligations

ROW = [0.5] * 64


def allowed(*, explanations: bool) -> Decision:
    obligations = Obligations(
        max_batch_size=8,
        explanations_allowed=explanations,
        flagged_input="serve_and_flag",
        rate_limit_per_minute=60,
    )
    return Decision(allow=True, reasons=(), obligations=obligations, decision_id="d-1")


def test_valid_body_gives_its_instances() -> None:
    parsed = parse_body(json.dumps({"instances": [ROW, ROW]}).encode(), explain=False, max_batch=8)
    assert parsed.problem is None and parsed.x is not None
    assert parsed.x.shape == (2, 64) and parsed.claimed_batch() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{", "body"),
        (b"[1]", "body"),
        (json.dumps({"instances": [ROW], "method": "saliency"}).encode(), "method"),
        (json.dumps({"instances": [[2.0] * 64]}).encode(), "instances[0][0]"),
    ],
)
def test_bad_body_keeps_a_422_naming_the_field(body: bytes, field: str) -> None:
    parsed = parse_body(body, explain=False, max_batch=8)
    assert parsed.x is None and parsed.problem is not None
    assert parsed.problem.status == 422 and parsed.problem.extra["field"].startswith(field)


def test_policy_is_asked_about_the_batch_the_body_claims() -> None:
    claimed = Parsed({"instances": [[9.0]] * 5}, None, None)
    assert claimed.claimed_batch() == 5
    assert Parsed(None, None, None).claimed_batch() == 1


def test_explanation_method_defaults_to_integrated_gradients() -> None:
    assert explanation_method(allowed(explanations=True), {}) == "integrated_gradients"
    assert explanation_method(allowed(explanations=True), {"method": "saliency"}) == "saliency"


def test_explanation_is_forbidden_without_the_obligation() -> None:
    with pytest.raises(ApiError) as denied:
        explanation_method(allowed(explanations=False), {"method": "saliency"})
    assert denied.value.status == 403


def test_unknown_explanation_method_is_invalid() -> None:
    with pytest.raises(ApiError) as invalid:
        explanation_method(allowed(explanations=True), {"method": "shap"})
    assert invalid.value.status == 422 and invalid.value.extra["field"] == "method"


def test_body_nested_deeper_than_the_limit_says_so_rather_than_invalid_json() -> None:
    body = b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    parsed = parse_body(body, explain=False, max_batch=8)
    assert parsed.problem is not None and parsed.problem.status == 422
    assert parsed.problem.extra["field"] == "body"
    assert "5001 levels deep; the limit is 8" in parsed.problem.message
    assert "not valid JSON" not in parsed.problem.message


def test_body_nested_at_the_limit_is_decoded_and_judged_on_its_shape() -> None:
    body = b'{"instances": ' + b"[" * 7 + b"0.5" + b"]" * 7 + b"}"
    parsed = parse_body(body, explain=False, max_batch=8)
    assert parsed.problem is not None and parsed.payload is not None
    assert parsed.problem.extra["field"].startswith("instances[0]")
