"""The request path in-process (real layers, the stack's OPA) under other configurations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.service.app.harness import Stack, digit_rows, events_for, token, wait_for
from tests.service.app.test_app_resilience import pgd_rows

pytestmark = pytest.mark.system


def client_for(
    stack: Stack, serving: dict[str, Any] | None = None, **env: str
) -> Iterator[tuple[TestClient, Any]]:
    """The pipeline in-process; ``serving`` stands for other serving facts of the model's
    (approved) registration, as a registration with them would give.
    """
    from dataclasses import replace

    from service.app.config import load_config
    from service.app.gate import verify_model
    from service.app.layers import build_layers
    from service.app.pipeline import Pipeline

    config = load_config(
        {
            "ZTML_HOME": str(stack.home),
            "ZTML_MODEL_PATH": str(stack.model_path),
            "ZTML_OPA_URL": f"unix://{stack.opa_socket}",
            **env,
        }
    )
    info = verify_model(config)
    if serving is not None:
        assert info.serving is not None  # the demo model is registered with its facts
        info = replace(info, serving={**info.serving, **serving})
    pipeline = Pipeline(build_layers(config, info))

    async def predict(request: Request) -> Response:
        return await pipeline.handle(request, "predict")

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
    with TestClient(app) as client:
        yield client, pipeline
        client.portal.call(pipeline.layers.authorizer.close)  # type: ignore[union-attr]
    pipeline.layers.close()


@pytest.fixture
def high_risk(stack: Stack) -> Iterator[tuple[TestClient, Any]]:
    yield from client_for(stack, serving={"risk_tier": "high"})


@pytest.fixture
def small_drift_window(stack: Stack) -> Iterator[tuple[TestClient, Any]]:
    yield from client_for(stack, ZTML_DRIFT_WINDOW="10")


def bearer(stack: Stack, sub: str, roles: tuple[str, ...]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(stack.home, sub, roles=roles)}"}


def test_flagged_input_is_rejected_when_the_policy_says_reject(
    stack: Stack, high_risk: tuple[TestClient, Any]
) -> None:
    client, _ = high_risk
    headers = bearer(stack, "owner", ("model-owner",))
    clean = client.post("/predict", json={"instances": digit_rows(2)}, headers=headers)
    assert clean.status_code == 200, clean.text
    attacked = client.post(
        "/predict", json={"instances": pgd_rows(stack, 10, eps=0.3)}, headers=headers
    )
    assert attacked.status_code == 422, attacked.text
    error = attacked.json()["error"]
    assert error["code"] == "input_flagged" and error["flagged"]
    events = events_for(stack.home, attacked.headers["x-request-id"])
    assert [e["status"] for e in events if e["kind"] == "request"] == [422]
    from service.review import ReviewQueue

    queued = [
        item
        for item in ReviewQueue(stack.home / "review.db").list(status="open")
        if item.request_id == error["request_id"]
    ]
    assert len(queued) == 1


def predict_as(
    client: TestClient, stack: Stack, rows: list[list[float]], sub: str, role: str
) -> httpx.Response:
    return client.post("/predict", json={"instances": rows}, headers=bearer(stack, sub, (role,)))


def policy_decisions(stack: Stack, request_id: str) -> list[tuple[bool, int, list[str]]]:
    """Each policy decision of a request: allowed, the status it ended with, its reasons."""
    return [
        (e["decision"]["allow"], e["status"], e["decision"]["reasons"])
        for e in events_for(stack.home, request_id)
        if e["kind"] == "policy_decision"
    ]


def test_flagged_input_fires_the_policys_flagged_input_rule(
    stack: Stack, high_risk: tuple[TestClient, Any]
) -> None:
    client, _ = high_risk
    attacked = predict_as(client, stack, pgd_rows(stack, 10, eps=0.3), "owner-f", "model-owner")
    assert attacked.status_code == 422, attacked.text
    rule = "flagged input rejected (model risk tier high)"
    assert attacked.json()["error"]["reasons"] == [rule]
    # Asked first without the screening (allowed), then with flagged_input true: OPA's
    # own rule denies, and that decision is audited with the request's status.
    assert policy_decisions(stack, attacked.headers["x-request-id"]) == [
        (True, 200, []),
        (False, 422, [rule]),
    ]


def test_flagged_input_is_served_and_flagged_when_the_policy_allows_it(
    stack: Stack, default_config: tuple[TestClient, Any]
) -> None:
    client, _ = default_config
    attacked = predict_as(client, stack, pgd_rows(stack, 20, eps=0.3), "flagged", "predictor")
    assert attacked.status_code == 200, attacked.text
    assert attacked.json()["flagged"] and attacked.json()["review_id"] is not None
    decisions = policy_decisions(stack, attacked.headers["x-request-id"])
    assert decisions == [(True, 200, []), (True, 200, [])]


def test_clean_input_is_decided_once(stack: Stack, default_config: tuple[TestClient, Any]) -> None:
    client, _ = default_config
    clean = predict_as(client, stack, digit_rows(2), "clean-once", "predictor")
    assert clean.status_code == 200, clean.text
    assert not clean.json()["flagged"]
    assert policy_decisions(stack, clean.headers["x-request-id"]) == [(True, 200, [])]


def test_predictor_may_not_use_a_high_risk_model(
    stack: Stack, high_risk: tuple[TestClient, Any]
) -> None:
    client, _ = high_risk
    response = client.post(
        "/predict",
        json={"instances": digit_rows(1)},
        headers=bearer(stack, "pred", ("predictor",)),
    )
    assert response.status_code == 403
    assert any("high risk" in r for r in response.json()["error"]["reasons"])


def test_drifted_inputs_write_a_drift_audit_event(
    stack: Stack, small_drift_window: tuple[TestClient, Any]
) -> None:
    client, _ = small_drift_window
    shifted = [[min(1.0, v + 0.5) for v in row] for row in digit_rows(10)]
    response = client.post(
        "/predict", json={"instances": shifted}, headers=bearer(stack, "drifter", ("predictor",))
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]

    def kinds() -> list[str]:
        return [e["kind"] for e in events_for(stack.home, request_id)]

    assert wait_for(lambda: "drift" in kinds(), timeout=30)  # tested off the request path
    assert kinds().count("drift") == 1 and kinds().count("request") == 1


def test_in_distribution_inputs_write_no_drift_event(
    stack: Stack, small_drift_window: tuple[TestClient, Any]
) -> None:
    client, _ = small_drift_window
    response = client.post(
        "/predict",
        json={"instances": digit_rows(10, start=100)},
        headers=bearer(stack, "steady", ("predictor",)),
    )
    assert response.status_code == 200
    time.sleep(2)  # let the background drift test finish
    kinds = [e["kind"] for e in events_for(stack.home, response.headers["x-request-id"])]
    assert "drift" not in kinds


@pytest.fixture
def default_config(stack: Stack) -> Iterator[tuple[TestClient, Any]]:
    yield from client_for(stack)


def test_unavailable_monitor_store_denies_with_503_and_is_audited(
    stack: Stack, default_config: tuple[TestClient, Any], tmp_path: Path
) -> None:
    from service.monitor import RateLimiter

    client, pipeline = default_config
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    pipeline.layers.rate_limiter = RateLimiter(blocker / "monitor.db")
    response = client.post(
        "/predict", json={"instances": digit_rows(1)}, headers=bearer(stack, "mon", ("predictor",))
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "monitor_unavailable"
    assert str(tmp_path) not in response.text
    events = events_for(stack.home, response.headers["x-request-id"])
    assert [e["status"] for e in events if e["kind"] == "request"] == [503]


def squeeze_spy(pipeline: Any, *, fail: bool = False) -> list[int]:
    """Count (or break) the squeezer's calls; it runs while OPA decides."""
    calls: list[int] = []
    analyze = pipeline.layers.squeezer.analyze

    def spy(x: Any) -> Any:
        calls.append(int(x.shape[0]))
        if fail:
            raise RuntimeError("squeezer broke")
        return analyze(x)

    pipeline.layers.squeezer.analyze = spy
    return calls


def test_denied_request_gets_no_prediction_although_squeezing_ran(
    stack: Stack, default_config: tuple[TestClient, Any]
) -> None:
    client, pipeline = default_config
    calls = squeeze_spy(pipeline)
    outsider = {"Authorization": f"Bearer {token(stack.home, 'outsider', tenant='acme')}"}
    response = client.post("/predict", json={"instances": digit_rows(2)}, headers=outsider)
    assert response.status_code == 403, response.text
    assert calls == [2]  # the squeezer ran while OPA evaluated ...
    assert "predictions" not in response.json() and "probabilities" not in response.text
    events = events_for(stack.home, response.headers["x-request-id"])
    assert [e["status"] for e in events if e["kind"] == "request"] == [403]
    assert [e["decision"]["allow"] for e in events if e["kind"] == "policy_decision"] == [False]


def test_unreachable_opa_denies_although_squeezing_ran(
    stack: Stack, default_config: tuple[TestClient, Any]
) -> None:
    from service.authz import OpaAuthorizer
    from service.stack.processes import free_port

    client, pipeline = default_config
    calls = squeeze_spy(pipeline)
    pipeline.layers.authorizer = OpaAuthorizer(f"http://127.0.0.1:{free_port()}")
    response = client.post(
        "/predict", json={"instances": digit_rows(1)}, headers=bearer(stack, "p", ("predictor",))
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "policy_unavailable"
    assert "predictions" not in response.json()
    assert calls in ([], [1])  # never served, whether or not the squeezer got to run


def test_squeezer_failure_on_a_denied_request_is_still_a_403(
    stack: Stack, default_config: tuple[TestClient, Any]
) -> None:
    client, pipeline = default_config
    squeeze_spy(pipeline, fail=True)
    outsider = {"Authorization": f"Bearer {token(stack.home, 'outsider', tenant='acme')}"}
    response = client.post("/predict", json={"instances": digit_rows(1)}, headers=outsider)
    assert response.status_code == 403


def test_squeezer_failure_on_an_allowed_request_is_a_500_after_the_decision(
    stack: Stack, default_config: tuple[TestClient, Any]
) -> None:
    client, pipeline = default_config
    squeeze_spy(pipeline, fail=True)
    response = client.post(
        "/predict", json={"instances": digit_rows(1)}, headers=bearer(stack, "p2", ("predictor",))
    )
    assert response.status_code == 500
    assert "predictions" not in response.json()
    events = events_for(stack.home, response.headers["x-request-id"])
    assert [e["decision"]["allow"] for e in events if e["kind"] == "policy_decision"] == [True]
    assert [e["status"] for e in events if e["kind"] == "request"] == [500]


def test_the_demo_models_policy_facts_come_from_its_registration_not_the_settings(
    stack: Stack,
) -> None:
    """Settings that once described the model cannot move it to another tenant or tier."""
    from service.stack.provision import DEMO_SERVING

    for _, pipeline in client_for(
        stack, ZTML_TENANT="other", ZTML_RISK_TIER="high", ZTML_MAX_BATCH="512"
    ):
        facts = pipeline._model_facts
        assert facts["tenant"] == DEMO_SERVING["tenant"] == "demo"
        assert facts["risk_tier"] == DEMO_SERVING["risk_tier"]
        assert facts["max_batch"] == DEMO_SERVING["max_batch"]
