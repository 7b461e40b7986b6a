"""Every example through a real OPA server with opa-python-client, as the service queries it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opa_client import OpaClient

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def client(opa_server: Any) -> Any:
    with OpaClient(host="127.0.0.1", port=opa_server.port, timeout=10.0) as opa:
        yield opa


def test_server_answers_like_opa_eval(
    example: Any, client: Any, opa_eval: Callable[[Any], Any]
) -> None:
    extra = example.load_data()
    for name, document in extra.items():
        client.update_or_create_data(document, name)
    try:
        answer = client.query_rule(
            input_data=example.load_input(), package_path=example.package, rule_name=example.rule
        )
    finally:
        for name in extra:
            client.delete_data(name)
    assert "result" in answer, f"{example.case}: undefined result {answer}"
    assert answer["result"] == opa_eval(example)


def test_server_does_not_serve_example_or_test_documents(client: Any) -> None:
    loaded = client.get_data("")["result"]
    assert "examples" not in loaded
    assert set(loaded["ztml"]) == {"authz", "admission", "provenance", "lib"}


def test_server_denies_a_request_without_input(client: Any) -> None:
    answer = client.query_rule(input_data={}, package_path="ztml.authz", rule_name="decision")
    assert answer["result"]["allow"] is False
    assert answer["result"]["reasons"]
