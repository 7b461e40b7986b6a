"""A short bounded load run with mixed traffic (the 5-minute soak is benchmarks/load.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from benchmarks.load import run_load
from service.audit.reader import last_records
from tests.system.conftest import LocalStack

pytestmark = [pytest.mark.system, pytest.mark.slow]


def _request_events(stack: LocalStack) -> int:
    records = last_records(stack.home / "audit", 10**9)
    return sum(1 for r in records if r.event.get("kind") == "request")


@pytest.fixture(scope="module")
def load_run(local_stack: LocalStack):
    before = _request_events(local_stack)
    result = asyncio.run(
        run_load(
            base_url=local_stack.state.service_url,
            home=local_stack.home,
            leader_pids=[local_stack.state.opa.pid, local_stack.state.service.pid],
            requests=1500,
            concurrency=4,
            warmup=200,
            verify=local_stack.verify,
        )
    )
    time.sleep(1.0)
    return result, _request_events(local_stack) - before


def test_valid_requests_never_fail_under_load(load_run):
    result, _ = load_run
    assert result.sent["valid"] > 500
    assert result.unexpected("valid") == 0, result.statuses["valid"]


def test_invalid_and_unauthorized_requests_get_their_status(load_run):
    result, _ = load_run
    assert result.unexpected("invalid") == 0, result.statuses["invalid"]
    assert result.unexpected("unauthorized") == 0, result.statuses["unauthorized"]


def test_every_request_is_audited_exactly_once(load_run):
    result, audited = load_run
    assert audited == result.total


def test_memory_stays_bounded(load_run):
    result, _ = load_run
    assert result.rss_growth < 0.10, f"RSS grew {result.rss_growth:.1%}"


def test_audit_log_verifies_after_load(load_run, local_stack: LocalStack):
    verify = local_stack.ztml("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
