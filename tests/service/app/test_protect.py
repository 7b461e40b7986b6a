"""A user's own BentoML service, protected by one decorator, served by a real `bentoml serve`.

The service is tests/service/app/user_service/classifier.py: a class written as its author
would, with ``@protect(model_dir=...)`` as the only change. It is served with real OPA, a
real ledger and audit log; every request to its API goes through ztml's stages and is
answered by the author's own method.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.app.harness import (
    Stack,
    b64url,
    digit_rows,
    events_for,
    install_demo_model,
    install_unapproved_demo_model,
    serve_until_exit,
    token,
)

TARGET = "tests.service.app.user_service.classifier:Classifier"


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory, demo_model_source: Path) -> Iterator[Stack]:
    """OPA and `bentoml serve` of the user's protected service, with the registered model."""
    from service.stack.runner import StackOptions, start_stack
    from service.stack.state import clear_state

    home = tmp_path_factory.mktemp("ztml-protect")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZTML_HOME", str(home))
        model = install_demo_model(home, demo_model_source)
        state = start_stack(
            StackOptions(
                home=home,
                model_path=model.path,
                model_digest=model.digest,
                extra_env={"CLASSIFIER_MODEL_DIR": str(model.path.parent)},
                client_auth="optional",
                service_target=TARGET,
            )
        )
        running = Stack.started(home, state, model)
        try:
            yield running
        finally:
            running.stop()
            clear_state(home)


def post(stack: Stack, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/predict", json=body, headers=headers or {}, timeout=30, verify=stack.tls
    )


def audited_status(stack: Stack, response: httpx.Response) -> int:
    """The status of the one ``request`` event the audit log holds for this response."""
    events = events_for(stack.home, response.headers["x-request-id"])
    requests = [e for e in events if e["kind"] == "request"]
    assert len(requests) == 1, events
    return int(requests[0]["status"])


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"
    return dict(error)


@pytest.mark.system
def test_valid_token_gets_the_user_methods_own_answer(protected: Stack) -> None:
    from service.model.data import load_splits

    labels = load_splits().y_test[:20]
    response = post(protected, {"instances": digit_rows(20)}, protected.headers("alice"))
    assert response.status_code == 200, response.text
    predicted = response.json()
    # The author's method answers: a bare list of labels, not ztml's prediction body.
    assert isinstance(predicted, list) and all(isinstance(p, int) for p in predicted)
    assert sum(int(a == b) for a, b in zip(predicted, labels, strict=True)) >= 16
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "server" not in response.headers
    events = events_for(protected.home, response.headers["x-request-id"])
    kinds = [e["kind"] for e in events]
    # One decision, and one more for a batch the squeezer flags (served with its flags).
    assert kinds.count("request") == 1 and 1 <= kinds.count("policy_decision") <= 2, kinds
    request = next(e for e in events if e["kind"] == "request")
    assert request["status"] == 200 and request["subject"] == "alice"
    assert request["model_digest"] == protected.digest
    assert str(request["input_digest"]).startswith("sha256:")


@pytest.mark.system
def test_missing_token_is_rejected_with_401_and_audited(protected: Stack) -> None:
    response = post(protected, {"instances": digit_rows(1)})
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert audited_status(protected, response) == 401


@pytest.mark.system
def test_forged_token_is_rejected_with_401_and_audited(protected: Stack) -> None:
    header, payload, signature = token(protected.home, "mallory").split(".")
    claims = json.loads(_b64decode(payload))
    claims["roles"] = ["admin"]
    forged = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    response = post(protected, {"instances": digit_rows(1)}, {"Authorization": f"Bearer {forged}"})
    assert_error(response, 401, "unauthenticated")
    assert audited_status(protected, response) == 401


@pytest.mark.system
def test_other_tenant_is_forbidden_with_403_and_audited(protected: Stack) -> None:
    response = post(
        protected, {"instances": digit_rows(1)}, protected.headers("eve", tenant="acme")
    )
    error = assert_error(response, 403, "forbidden")
    assert any("tenant" in str(reason) for reason in error["reasons"])  # type: ignore[attr-defined]
    assert audited_status(protected, response) == 403


@pytest.mark.system
def test_out_of_range_input_is_rejected_with_422_naming_the_field(protected: Stack) -> None:
    rows = digit_rows(2)
    rows[1][5] = 1.7
    response = post(protected, {"instances": rows}, protected.headers("range"))
    error = assert_error(response, 422, "invalid_input")
    assert error["field"] == "instances[1][5]"
    assert audited_status(protected, response) == 422


@pytest.mark.system
def test_field_the_sanitizer_does_not_know_is_rejected_with_422(protected: Stack) -> None:
    body = {"instances": digit_rows(1), "threshold": 0.5}
    response = post(protected, body, protected.headers("extra"))
    assert assert_error(response, 422, "invalid_input")["field"] == "threshold"
    assert audited_status(protected, response) == 422


@pytest.mark.system
def test_bentoml_probes_still_answer(protected: Stack) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        response = httpx.get(f"{protected.url}{path}", verify=protected.tls, timeout=10)
        assert response.status_code == 200, path


def _b64decode(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _tamper(home: Path, demo_model_source: Path) -> Path:
    model = install_demo_model(home, demo_model_source)
    data = bytearray(model.path.read_bytes())
    data[-1] ^= 0x01
    model.path.write_bytes(bytes(data))
    return Path(model.path)


@pytest.mark.system
@pytest.mark.parametrize(
    ("prepare", "reason"),
    [(_tamper, "no register record"), (install_unapproved_demo_model, "approve")],
)
def test_refused_model_stops_the_protected_server_non_zero(
    prepare: object,
    reason: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    demo_model_source: Path,
) -> None:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    weights = prepare(tmp_path, demo_model_source)  # type: ignore[operator]
    returncode, output = serve_until_exit(
        tmp_path,
        {"CLASSIFIER_MODEL_DIR": str(weights.parent), "ZTML_OPA_URL": "http://127.0.0.1:9"},
        target=TARGET,
    )
    assert returncode == 3, output[-2000:]
    lines = [line for line in output.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, output[-2000:]
    assert reason in lines[0]
    assert "Traceback" not in output


@pytest.mark.system
def test_worker_that_cannot_build_its_layers_stops_the_server_with_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_model_source: Path
) -> None:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    model = install_demo_model(tmp_path, demo_model_source)
    (tmp_path / "audit").write_text("not a directory")  # only a worker opens the audit log
    returncode, output = serve_until_exit(
        tmp_path, {"CLASSIFIER_MODEL_DIR": str(model.path.parent)}, target=TARGET
    )
    assert returncode == 3, output[-2000:]
    assert output.count("refusing to start") == 1, output[-2000:]
    assert "audit" in output.split("refusing to start", 1)[1].splitlines()[0]


def test_protect_refuses_a_class_that_is_not_a_bentoml_service() -> None:
    from service.app.protect import ProtectError, protect

    class Plain:
        pass

    with pytest.raises(ProtectError, match=r"above @bentoml\.service"):
        protect(model_dir="/nowhere")(Plain)


def test_protect_refuses_an_api_whose_batch_is_not_named_instances() -> None:
    import bentoml

    from service.app.protect import ProtectError, protect

    @bentoml.service
    class Rows:
        @bentoml.api
        def classify(self, rows: list[list[float]]) -> list[int]:
            return [0 for _ in rows]

    with pytest.raises(ProtectError, match=r"Rows.classify: .*'instances'.*\['rows'\]"):
        protect(model_dir="/nowhere")(Rows)


def test_model_path_setting_naming_another_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.app.errors import ConfigError
    from service.app.protect import config_loader

    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    monkeypatch.setenv("ZTML_MODEL_PATH", str(tmp_path / "other" / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"ZTML_MODEL_PATH=.* names another model"):
        config_loader(tmp_path / "mine")()
    monkeypatch.setenv("ZTML_MODEL_PATH", str(tmp_path / "mine" / "model.safetensors"))
    (tmp_path / "mine").mkdir()
    assert config_loader(tmp_path / "mine")().model_path == tmp_path / "mine" / "model.safetensors"
