"""OpaAuthorizer against a real OPA server, and the decision parser's fail-closed checks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.authz import (
    OpaAuthorizer,
    PolicyUnavailableError,
    evaluate_provenance,
    parse_decision,
)
from service.stack.processes import free_port, start_process, stop_group, wait_ready
from tests.service.authz.policy_inputs import decide, policy_input


@pytest.fixture(scope="module")
def opa_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import os

    from service.stack.runner import opa_command
    from service.toolchain.opa import find_opa
    from service.toolchain.paths import PROJECT_ROOT

    port = free_port()
    log = tmp_path_factory.mktemp("opa") / "opa.log"
    proc = start_process(
        opa_command(find_opa(), port), log_path=log, env=dict(os.environ), cwd=PROJECT_ROOT
    )
    try:
        wait_ready(
            f"http://127.0.0.1:{port}/health", process=proc, what="OPA", log_path=log, timeout=30
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc.pid)


@pytest.mark.system
def test_allowed_call_gets_obligations_and_opa_decision_id(opa_url: str) -> None:
    decision = decide(opa_url, policy_input())
    assert decision.allow and decision.reasons == ()
    assert decision.obligations.max_batch_size == 64
    assert decision.decision_id and not decision.decision_id.startswith("local-")


@pytest.mark.system
def test_cross_tenant_call_is_denied_with_reasons(opa_url: str) -> None:
    doc = policy_input()
    doc["subject"]["tenant"] = "acme"
    decision = decide(opa_url, doc)
    assert not decision.allow
    assert any("tenant" in r for r in decision.reasons)
    assert decision.obligations.max_batch_size == 0


def rate_limit(url: str, roles: list[str], timeout: float = 2.0) -> int:
    async def run() -> int:
        authorizer = OpaAuthorizer(url, timeout_seconds=timeout)
        try:
            return await authorizer.rate_limit(roles)
        finally:
            await authorizer.close()

    return asyncio.run(run())


@pytest.mark.system
def test_rate_limit_of_roles_is_the_one_the_decision_enforces(opa_url: str) -> None:
    doc = policy_input()
    doc["subject"]["roles"] = ["viewer", "predictor", "superuser"]
    decision = decide(opa_url, doc)
    assert decision.allow
    limit = rate_limit(opa_url, ["viewer", "predictor", "superuser"])
    assert limit == decision.obligations.rate_limit_per_minute == 120


@pytest.mark.system
def test_rate_limit_of_unknown_roles_is_zero(opa_url: str) -> None:
    assert rate_limit(opa_url, ["superuser"]) == 0
    assert rate_limit(opa_url, []) == 0


def test_rate_limit_from_an_unreachable_opa_fails_closed() -> None:
    with pytest.raises(PolicyUnavailableError):
        rate_limit(f"http://127.0.0.1:{free_port()}", ["viewer"], timeout=0.5)


def test_unreachable_opa_raises_policy_unavailable() -> None:
    with pytest.raises(PolicyUnavailableError):
        decide(f"http://127.0.0.1:{free_port()}", policy_input(), timeout=0.5)


@pytest.mark.parametrize(
    "response",
    [
        {},
        {"result": None},
        {"result": {"allow": "yes", "reasons": [], "obligations": {}}},
        {"result": {"allow": True, "reasons": ["x"], "obligations": {}}},
        {"result": {"allow": True, "reasons": []}},
        {
            "result": {
                "allow": True,
                "reasons": [],
                "obligations": {
                    "max_batch_size": -1,
                    "explanations_allowed": True,
                    "flagged_input": "reject",
                    "rate_limit_per_minute": 1,
                },
            }
        },
        {
            "result": {
                "allow": True,
                "reasons": [],
                "obligations": {
                    "max_batch_size": 1,
                    "explanations_allowed": True,
                    "flagged_input": "ignore",
                    "rate_limit_per_minute": 1,
                },
            }
        },
        [],
    ],
)
def test_undefined_or_malformed_decision_fails_closed(response: object) -> None:
    with pytest.raises(PolicyUnavailableError):
        parse_decision(response)


def test_denial_without_reasons_still_explains_itself() -> None:
    decision = parse_decision(
        {
            "result": {
                "allow": False,
                "reasons": [],
                "obligations": {
                    "max_batch_size": 9,
                    "explanations_allowed": True,
                    "flagged_input": "serve_and_flag",
                    "rate_limit_per_minute": 9,
                },
            }
        }
    )
    assert decision.reasons and not decision.obligations.explanations_allowed


def test_provenance_gate_denies_an_unknown_digest(tmp_path: Path) -> None:
    decision = evaluate_provenance(
        {
            "digest": "sha256:" + "b" * 64,
            "ledger": {"verified": True, "records": []},
            "trust": {"trainer_key_ids": [], "approver_key_ids": []},
        }
    )
    assert not decision.allow
    assert any("register" in r for r in decision.reasons)
