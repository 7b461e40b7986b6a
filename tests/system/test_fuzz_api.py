"""Fuzz the running service through its OpenAPI document with schemathesis.

Every generated request (valid and invalid bodies, headers and methods) must get an answer
that is not a server error and that matches the documented schema: status code, content
type, JSON body and headers. With the default budget the run makes well over 1,000 calls.
The document is the one the service serves (checked below to be the same one).
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import NegativeDataRejectionConfig

from service.app.openapi import build_spec
from tests.service.app.harness import token
from tests.system.conftest import LocalStack

pytestmark = [pytest.mark.system, pytest.mark.slow]

MAX_BATCH = 256  # the service's default ZTML_MAX_BATCH, as the served document says
EXAMPLES_PER_OPERATION = int(os.environ.get("ZTML_FUZZ_EXAMPLES", "400"))
CALLS: dict[str, int] = {"total": 0}

# Invalid input may also be refused for its size: 413 (body over the limit) and 431
# (header fields over the limit) are documented refusals, as good as a 422.
REFUSALS = (*NegativeDataRejectionConfig._DEFAULT_EXPECTED_STATUSES, "413", "431")
SPEC = build_spec(max_batch=MAX_BATCH, model_name="digits")
# The named routes (/v1/models/digits/...) run the same handlers as the unnamed ones, which
# are fuzzed; the document served is checked whole below.
schema = schemathesis.openapi.from_dict(
    SPEC,
    config=SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": list(REFUSALS)}}}
    ),
).exclude(path_regex="^/v1/models/")


@pytest.fixture(scope="session")
def fuzz_target(local_stack: LocalStack) -> tuple[str, str, str | bool]:
    """The service's base URL, a valid analyst token (so bodies reach the sanitizer) and
    what verifies the service's TLS certificate (the stack's CA file)."""
    return (
        local_stack.state.service_url,
        token(local_stack.home, "fuzzer", roles=("analyst",), ttl_seconds=3600),
        local_stack.state.ca_file or True,
    )


def test_the_fuzzed_document_is_the_one_the_service_serves(local_stack: LocalStack):
    served = httpx.get(
        f"{local_stack.state.service_url}/docs.json", timeout=10, verify=local_stack.verify
    ).json()
    assert served == SPEC


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_error_and_every_answer_matches_the_schema(
    case: schemathesis.Case, fuzz_target: tuple[str, str, str | bool]
):
    base_url, valid_token, verify = fuzz_target
    headers = dict(case.headers or {})
    if "authorization" not in {k.lower() for k in headers}:
        headers["Authorization"] = f"Bearer {valid_token}"
    CALLS["total"] += 1
    case.call_and_validate(base_url=base_url, headers=headers, verify=verify)


def test_the_fuzz_run_made_enough_calls():
    if os.environ.get("ZTML_FUZZ_EXAMPLES") is not None:
        pytest.skip("a custom fuzz budget was set")
    assert CALLS["total"] >= 1000, f"only {CALLS['total']} fuzz calls were made"
