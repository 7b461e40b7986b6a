"""Every stage of the request path, attacked through the real stack (OPA + bentoml serve)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.service.app.harness import Stack, audit_events, b64url, digit_rows, events_for, token

pytestmark = pytest.mark.system

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def predict(stack: Stack, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/predict", json=body, headers=headers or {}, timeout=30, verify=stack.tls
    )


def raw_post(stack: Stack, path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{stack.url}{path}",
        content=content,
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
        verify=stack.tls,
    )


def request_event(stack: Stack, response: httpx.Response) -> dict[str, object]:
    request_id = response.headers["x-request-id"]
    events = [e for e in events_for(stack.home, request_id) if e["kind"] == "request"]
    assert len(events) == 1, events
    return events[0]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and "/work" not in response.text
    return error


def test_authorized_predict_is_served_and_audited(stack: Stack) -> None:
    response = predict(stack, {"instances": digit_rows(3)}, stack.headers("alice"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 3
    assert all(0 <= p["label"] <= 9 for p in body["predictions"])
    assert body["model"]["digest"] == stack.digest
    events = events_for(stack.home, response.headers["x-request-id"])
    kinds = sorted(e["kind"] for e in events)
    assert kinds == ["policy_decision", "request"]
    decision = next(e for e in events if e["kind"] == "policy_decision")["decision"]
    assert decision["allow"] is True and decision["decision_id"]
    event = request_event(stack, response)
    assert event["status"] == 200 and event["subject"] == "alice"
    assert str(event["input_digest"]).startswith("sha256:")


def test_predictions_match_the_labels_of_real_digits(stack: Stack) -> None:
    from service.model.data import load_splits

    labels = load_splits().y_test[:20]
    response = predict(stack, {"instances": digit_rows(20)}, stack.headers("accuracy"))
    assert response.status_code == 200
    predicted = [p["label"] for p in response.json()["predictions"]]
    assert sum(int(a == b) for a, b in zip(predicted, labels, strict=True)) >= 16


def test_missing_token_is_rejected_with_401_and_audited(stack: Stack) -> None:
    response = predict(stack, {"instances": digit_rows(1)})
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")
    event = request_event(stack, response)
    assert event["status"] == 401 and event["subject"] is None


def test_expired_token_is_rejected_with_401(stack: Stack) -> None:
    expired = token(stack.home, "late", ttl_seconds=60, now=time.time() - 3600)
    response = predict(stack, {"instances": digit_rows(1)}, {"Authorization": f"Bearer {expired}"})
    assert_error(response, 401, "unauthenticated")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert request_event(stack, response)["status"] == 401


def test_forged_token_is_rejected_with_401(stack: Stack) -> None:
    header, payload, signature = token(stack.home, "mallory", roles=("predictor",)).split(".")
    claims = json.loads(base64_decode(payload))
    claims["roles"] = ["admin"]
    forged = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    response = predict(stack, {"instances": digit_rows(1)}, {"Authorization": f"Bearer {forged}"})
    assert_error(response, 401, "unauthenticated")
    assert request_event(stack, response)["status"] == 401


def test_token_signed_by_an_unknown_key_is_rejected_with_401(stack: Stack) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from service.authn import DEFAULT_AUDIENCE, LOCAL_ISSUER, issue_token
    from service.keys.store import Signer

    rogue = Signer("rogue", Ed25519PrivateKey.generate())
    forged = issue_token(
        rogue,
        issuer=LOCAL_ISSUER,
        audience=DEFAULT_AUDIENCE,
        sub="rogue",
        roles=["admin"],
        tenant="demo",
        scopes=["predict"],
        ttl_seconds=60,
    )
    response = predict(stack, {"instances": digit_rows(1)}, {"Authorization": f"Bearer {forged}"})
    assert_error(response, 401, "unauthenticated")


def test_alg_none_token_is_rejected_with_401(stack: Stack) -> None:
    real_header, payload, _ = token(stack.home, "nobody").split(".")
    kid = json.loads(base64_decode(real_header))["kid"]
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    response = predict(
        stack, {"instances": digit_rows(1)}, {"Authorization": f"Bearer {header}.{payload}."}
    )
    assert_error(response, 401, "unauthenticated")
    assert request_event(stack, response)["status"] == 401


def test_cross_tenant_request_is_forbidden_with_reasons(stack: Stack) -> None:
    response = predict(stack, {"instances": digit_rows(1)}, stack.headers("eve", tenant="acme"))
    error = assert_error(response, 403, "forbidden")
    assert any("tenant" in reason for reason in error["reasons"])  # type: ignore[union-attr]
    events = events_for(stack.home, response.headers["x-request-id"])
    decision = next(e for e in events if e["kind"] == "policy_decision")["decision"]
    assert decision["allow"] is False and decision["reasons"] == error["reasons"]
    assert request_event(stack, response)["status"] == 403


def test_explain_by_a_predictor_is_forbidden(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.url}/explain",
        json={"instances": digit_rows(1)},
        headers=stack.headers("pete", roles=("predictor",)),
        timeout=30,
        verify=stack.tls,
    )
    error = assert_error(response, 403, "forbidden")
    assert error["reasons"]
    assert request_event(stack, response)["status"] == 403


def test_explain_by_an_analyst_returns_attributions(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.url}/explain",
        json={"instances": digit_rows(2), "method": "saliency"},
        headers=stack.headers("ann", roles=("analyst",)),
        timeout=60,
        verify=stack.tls,
    )
    assert response.status_code == 200, response.text
    explanations = response.json()["explanations"]
    assert len(explanations) == 2 and len(explanations[0]["attributions"]) == 64
    assert request_event(stack, response)["status"] == 200


def test_metadata_names_the_verified_model(stack: Stack) -> None:
    response = httpx.get(
        f"{stack.url}/metadata", headers=stack.headers("viv", roles=("viewer",)), verify=stack.tls
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"]["digest"] == stack.digest


def test_over_the_rate_gets_429_with_retry_after(stack: Stack) -> None:
    headers = stack.headers("rapid", roles=("viewer",))
    with httpx.Client(timeout=30, verify=stack.tls) as client:
        responses = [client.get(f"{stack.url}/metadata", headers=headers) for _ in range(30)]
    limited = [r for r in responses if r.status_code == 429]
    assert limited, [r.status_code for r in responses]
    assert_error(limited[0], 429, "rate_limited")
    assert int(limited[0].headers["retry-after"]) >= 1
    assert request_event(stack, limited[0])["status"] == 429


def test_malformed_json_is_rejected_with_422(stack: Stack) -> None:
    response = raw_post(stack, "/predict", b'{"instances": [[0.1, 0.2', stack.headers("mal"))
    error = assert_error(response, 422, "invalid_input")
    assert error["field"] == "body"
    assert request_event(stack, response)["status"] == 422


def test_nan_input_is_rejected_with_422_naming_the_field(stack: Stack) -> None:
    row = ", ".join(["0.5"] * 10 + ["NaN"] + ["0.5"] * 53)
    body = ('{"instances": [[' + row + "]]}").encode()
    response = raw_post(stack, "/predict", body, stack.headers("nan"))
    error = assert_error(response, 422, "invalid_input")
    assert error["field"] == "instances[0][10]"
    assert request_event(stack, response)["status"] == 422


def test_out_of_range_input_is_rejected_with_422(stack: Stack) -> None:
    rows = digit_rows(2)
    rows[1][5] = 1.7
    response = predict(stack, {"instances": rows}, stack.headers("range"))
    error = assert_error(response, 422, "invalid_input")
    assert error["field"] == "instances[1][5]"
    assert "1.7" in str(error["message"])
    assert request_event(stack, response)["status"] == 422


def test_wrong_shape_is_rejected_with_422(stack: Stack) -> None:
    response = predict(stack, {"instances": [[0.5] * 63]}, stack.headers("shape"))
    error = assert_error(response, 422, "invalid_input")
    assert str(error["field"]).startswith("instances[0]")
    assert request_event(stack, response)["status"] == 422


def test_oversized_body_is_rejected_with_413(stack: Stack) -> None:
    body = json.dumps({"instances": [[0.5] * 64] * 1500}).encode()
    assert len(body) > 256 * 1024
    response = raw_post(stack, "/predict", body, stack.headers("big"))
    assert_error(response, 413, "payload_too_large")
    assert request_event(stack, response)["status"] == 413


def test_slow_body_upload_is_cut_off_with_504_and_audited(stack: Stack) -> None:
    # Slowloris: valid headers, then part of the body, then nothing. The service's own
    # deadline (8 s on the test stack) answers in its JSON shape and audits the request,
    # before BentoML's 30 s timeout would cut it off with neither.
    from urllib.parse import urlsplit

    url = urlsplit(stack.url)
    body = json.dumps({"instances": digit_rows(1)}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: {stack.headers('slow')['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with stack.connect(timeout=25) as sock:
        sock.sendall(head + body[:20])
        started = time.monotonic()
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
        waited = time.monotonic() - started
    status_line, _, rest = raw.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    assert status_line.split()[1] == b"504", raw
    headers = dict(
        line.decode().lower().split(": ", 1) for line in header_block.split(b"\r\n") if line
    )
    error = json.loads(payload)["error"]
    assert error["code"] == "timeout" and error["request_id"] == headers["x-request-id"]
    assert "Traceback" not in payload.decode() and "/work" not in payload.decode()
    assert 7.5 <= waited < 20, waited
    events = [e for e in events_for(stack.home, headers["x-request-id"]) if e["kind"] == "request"]
    assert [e["status"] for e in events] == [504]


def test_errors_carry_security_headers_and_no_server_header(stack: Stack) -> None:
    for response in (
        predict(stack, {"instances": digit_rows(1)}),
        predict(stack, {"instances": digit_rows(1)}, stack.headers("hdr")),
        httpx.get(f"{stack.url}/livez", verify=stack.tls),
    ):
        assert "server" not in response.headers
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-request-id"]


def test_unknown_route_and_method_get_json_errors(stack: Stack) -> None:
    assert_error(httpx.get(f"{stack.url}/admin", verify=stack.tls), 404, "not_found")
    wrong = httpx.get(f"{stack.url}/predict", verify=stack.tls)
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"


def test_probes_and_metrics_are_public_and_reveal_nothing(stack: Stack) -> None:
    for path in ("/livez", "/readyz", "/metrics"):
        response = httpx.get(f"{stack.url}{path}", verify=stack.tls)
        assert response.status_code == 200, path
        text = response.text
        assert "eyJ" not in text and "PRIVATE KEY" not in text and str(stack.home) not in text
    assert "ztml_" in httpx.get(f"{stack.url}/metrics", verify=stack.tls).text


def test_openapi_describes_the_api_with_error_responses(stack: Stack) -> None:
    spec = httpx.get(f"{stack.url}/docs.json", verify=stack.tls).json()
    predict_op = spec["paths"]["/predict"]["post"]
    assert "requestBody" in predict_op
    for status in ("200", "401", "403", "413", "422", "429", "431", "503"):
        assert status in predict_op["responses"]
    assert "/explain" in spec["paths"] and "/metadata" in spec["paths"]


def base64_decode(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_body_that_is_not_an_object_is_rejected_with_422(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.url}/explain",
        json=digit_rows(1),
        headers=stack.headers("listy", roles=("analyst",)),
        timeout=30,
        verify=stack.tls,
    )
    error = assert_error(response, 422, "invalid_input")
    assert error["field"] == "body"


def test_unknown_field_is_rejected_with_422(stack: Stack) -> None:
    response = predict(stack, {"instances": digit_rows(1), "debug": True}, stack.headers("extra"))
    error = assert_error(response, 422, "invalid_input")
    assert error["field"] == "debug"
    assert request_event(stack, response)["status"] == 422


def test_deeply_nested_body_is_rejected_with_422_saying_how_deep(stack: Stack) -> None:
    from service.sanitizer import MAX_JSON_DEPTH

    body = b'{"instances": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    response = raw_post(stack, "/predict", body, stack.headers("deep"))
    error = assert_error(response, 422, "invalid_input")
    assert error["field"] == "body"
    assert f"3001 levels deep; the limit is {MAX_JSON_DEPTH}" in str(error["message"])
    assert "not valid JSON" not in str(error["message"])
    assert request_event(stack, response)["status"] == 422


def _honour_retry_after(
    stack: Stack, sub: str, phases: list[tuple[tuple[str, ...], float]]
) -> list[httpx.Response]:
    """GET /metadata as fast as allowed, sleeping for Retry-After after each 429.

    Each phase is (roles of the token, seconds): the same subject may change roles.
    """
    answers = []
    with httpx.Client(base_url=stack.url, timeout=30, verify=stack.tls) as client:
        for roles, seconds in phases:
            headers = stack.headers(sub, roles=roles)
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                response = client.get("/metadata", headers=headers)
                answers.append(response)
                if response.status_code == 429:
                    time.sleep(int(response.headers["retry-after"]))
    return answers


def _rate_denials(stack: Stack, sub: str) -> list[str]:
    return [
        reason
        for e in audit_events(stack.home)
        if e.get("subject") == sub and e["kind"] == "policy_decision"
        for reason in (e.get("decision") or {}).get("reasons") or []
        if "request rate" in reason
    ]


@pytest.mark.slow
def test_client_honouring_retry_after_is_never_denied_403_for_its_rate(stack: Stack) -> None:
    """The token bucket and the policy's per-minute limit agree, through a real OPA.

    Two clients, together (one minute and a bit): one viewer (limit 60/min, bucket burst
    12 on the test stack: a bucket alone admits 72 in the first minute), and one subject
    who hammers as a predictor (120/min) and then continues with a viewer's token.
    """
    from concurrent.futures import ThreadPoolExecutor

    scenarios = {
        "patient-viewer": [(("viewer",), 70.0)],
        "demoted-predictor": [(("predictor",), 30.0), (("viewer",), 40.0)],
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            sub: pool.submit(_honour_retry_after, stack, sub, phases)
            for sub, phases in scenarios.items()
        }
        answers = {sub: future.result() for sub, future in futures.items()}
    for sub, responses in answers.items():
        statuses = [r.status_code for r in responses]
        assert 403 not in statuses, (sub, [r.json() for r in responses if r.status_code == 403][:1])
        assert set(statuses) == {200, 429}, (sub, statuses)
        assert _rate_denials(stack, sub) == []
        # The limit over the window was reached and waited out: a Retry-After of more
        # than the bucket's 1 s, and requests served after it.
        waits = [int(r.headers["retry-after"]) for r in responses if r.status_code == 429]
        assert max(waits) > 1, (sub, waits)
        last_long_wait = max(
            i
            for i, r in enumerate(responses)
            if r.status_code == 429 and int(r.headers["retry-after"]) > 1
        )
        assert any(r.status_code == 200 for r in responses[last_long_wait:]), sub
    # The viewer was served at the full rate its limit allows: a minute's worth and more.
    assert sum(r.status_code == 200 for r in answers["patient-viewer"]) > 60
