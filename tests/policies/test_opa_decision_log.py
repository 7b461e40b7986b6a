"""OPA's decision log (console) never carries raw model inputs or tokens."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from opa_client import OpaClient

pytestmark = pytest.mark.system

FAKE_TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.ZmFrZS10b2tlbi1zaWduYXR1cmU"
FEATURES = [[0.123456789] * 64, [0.987654321] * 64]


def wait_for_decision(server: Any, decision_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for event in server.decision_logs():
            if event.get("decision_id") == decision_id:
                return dict(event)
        time.sleep(0.1)
    raise AssertionError(f"no decision log line for {decision_id}:\n{server.log_path.read_text()}")


def decide(server: Any, example_input: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Make a decision through the client; return the decision log event and its raw line."""
    with OpaClient(host="127.0.0.1", port=server.port, timeout=10.0) as client:
        answer = client.query_rule(
            input_data=example_input, package_path="ztml.authz", rule_name="decision"
        )
    event = wait_for_decision(server, answer["decision_id"])
    raw = next(
        line
        for line in server.log_path.read_text().splitlines()
        if answer["decision_id"] in line and "Decision Log" in line
    )
    return event, raw


def secret_input(examples_dir: Any) -> dict[str, Any]:
    doc = json.loads((examples_dir / "authz" / "allow-predict" / "input.json").read_text())
    doc["token"] = FAKE_TOKEN
    doc["headers"] = {"authorization": f"Bearer {FAKE_TOKEN}", "x-request-id": "req-1"}
    doc["subject"]["token"] = FAKE_TOKEN
    doc["request"]["features"] = FEATURES
    doc["request"]["body"] = {"instances": FEATURES}
    return doc


def test_decision_log_erases_tokens_and_raw_inputs(opa_server: Any, examples_dir: Any) -> None:
    event, raw = decide(opa_server, secret_input(examples_dir))
    assert FAKE_TOKEN not in raw
    assert "0.123456789" not in raw
    assert "0.987654321" not in raw
    assert set(event["erased"]) >= {
        "/input/token",
        "/input/headers/authorization",
        "/input/subject/token",
        "/input/request/features",
        "/input/request/body",
    }


def test_decision_log_keeps_what_an_audit_needs(opa_server: Any, examples_dir: Any) -> None:
    event, _ = decide(opa_server, secret_input(examples_dir))
    assert event["path"] == "ztml/authz/decision"
    assert event["input"]["subject"]["sub"] == "alice"
    assert event["input"]["headers"] == {"x-request-id": "req-1"}
    assert event["result"]["allow"] is True
    assert event["labels"]["app"] == "ztml"


def test_decision_log_without_the_mask_would_leak(
    opa_server_factory: Any, examples_dir: Any, tmp_path: Any
) -> None:
    # Negative control: the same server pointed at a mask rule that does not exist.
    config = tmp_path / "no-mask.yaml"
    config.write_text(
        "decision_logs:\n  console: true\n  mask_decision: /system/log/no_such_mask\n"
    )
    server = opa_server_factory(config)
    event, raw = decide(server, secret_input(examples_dir))
    assert FAKE_TOKEN in raw
    assert "erased" not in event
