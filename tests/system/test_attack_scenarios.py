"""End-to-end attacks on a running local stack (real OPA, BentoML, ledger and audit log).

Each scenario attacks the stack from outside, over HTTP or on disk, and checks both the
answer and the record it leaves.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.toolchain.opa import OPA_SERVER_ENV
from tests.service.app.harness import audit_events, digit_rows, restart_opa, token, wait_for
from tests.system.conftest import LocalStack

pytestmark = [pytest.mark.system, pytest.mark.slow]


def _headers(stack: LocalStack, sub: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(stack.home, sub, **kwargs)}"}


def _requests_audited(home: Path) -> int:
    return sum(1 for e in audit_events(home) if e.get("kind") == "request")


PACE_SECONDS = 0.35  # under the predictor role's 120/min once its burst is spent


def _paced_predictions(stack: LocalStack, sub: str, rows: list[list[float]]) -> list[int]:
    headers = _headers(stack, sub, roles=("predictor",))
    statuses = []
    with httpx.Client(base_url=stack.state.service_url, timeout=10, verify=stack.verify) as client:
        for row in rows:
            reply = client.post("/predict", json={"instances": [row]}, headers=headers)
            statuses.append(reply.status_code)
            time.sleep(PACE_SECONDS)
    return statuses


def _refusal_reasons(stack: LocalStack, sub: str) -> list[str]:
    return [
        " ".join((e.get("decision") or {}).get("reasons") or [])
        for e in audit_events(stack.home)
        if e.get("subject") == sub and e.get("kind") == "policy_decision" and e["status"] == 403
    ]


def test_extraction_style_queries_are_flagged_and_throttled(local_stack: LocalStack):
    """Synthetic queries around a few seeds (as an extraction attack sends) get cut off."""
    rng = np.random.default_rng(7)
    seeds = np.asarray(digit_rows(3))
    rows = [np.clip(seeds[i % 3] + rng.normal(0, 0.02, 64), 0, 1).tolist() for i in range(45)]
    statuses = _paced_predictions(local_stack, "extractor-1", rows)
    assert statuses[0] == 200, "the first queries of the sequence are served"
    first_refusal = next((i for i, s in enumerate(statuses) if s == 403), None)
    assert first_refusal is not None, f"the sequence was never refused: {statuses}"
    assert all(s == 403 for s in statuses[first_refusal:]), statuses
    reasons = _refusal_reasons(local_stack, "extractor-1")
    assert reasons, "the refusals were not audited"
    assert all("extraction" in r for r in reasons), reasons


def test_benign_traffic_of_the_same_volume_is_not_flagged(local_stack: LocalStack):
    statuses = _paced_predictions(local_stack, "benign-1", digit_rows(60, start=100))
    assert statuses.count(200) == len(statuses), statuses
    assert _refusal_reasons(local_stack, "benign-1") == []


def test_tampered_audit_log_is_named_by_verify(local_stack: LocalStack, tmp_path: Path):
    """Flip one recorded status in a copy of the live audit log: verify names that record."""
    with httpx.Client(
        base_url=local_stack.state.service_url, timeout=10, verify=local_stack.verify
    ) as client:
        for _ in range(5):
            client.get("/metadata", headers=_headers(local_stack, "auditee"))
    copy = tmp_path / "audit"
    subprocess.run(["cp", "-a", str(local_stack.home / "audit"), str(copy)], check=True)
    (tmp_path / "audit-anchors.jsonl").write_bytes(
        (local_stack.home / "audit-anchors.jsonl").read_bytes()
    )
    verify = ("audit", "verify", str(copy), "--trust", str(local_stack.home / "keys"))
    intact = local_stack.ztml(*verify)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    segment = max(copy.glob("*/segment-*.jsonl"), key=lambda p: p.stat().st_size)
    lines = segment.read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if b'"status":200' in line)
    lines[index] = lines[index].replace(b'"status":200', b'"status":201', 1)
    segment.write_bytes(b"".join(lines))
    result = local_stack.ztml(*verify)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert segment.name in output
    assert re.search(rf"line:\s*{index + 1}\b", output), output
    assert "altered" in output


def _opa_cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


def _restart_opa(stack: LocalStack, argv: list[str]) -> int:
    return restart_opa(
        argv,
        socket_path=Path(stack.state.opa_socket),
        log=stack.home / "logs" / "opa-restarted.log",
        env={**stack.env, **OPA_SERVER_ENV},
    )


@pytest.mark.disruptive
def test_opa_killed_during_traffic_denies_everything_and_recovers(local_stack: LocalStack):
    """SIGKILL OPA under traffic: nothing is allowed, everything is audited, then recovery."""
    url = local_stack.state.service_url
    headers = _headers(local_stack, "during-outage", roles=("analyst",))
    body = {"instances": digit_rows(1, start=300)}
    argv = _opa_cmdline(local_stack.state.opa.pid)
    before = _requests_audited(local_stack.home)
    with httpx.Client(base_url=url, timeout=10, verify=local_stack.verify) as client:
        assert client.post("/predict", json=body, headers=headers).status_code == 200
        os.killpg(local_stack.state.opa.pid, signal.SIGKILL)
        outage = [client.post("/predict", json=body, headers=headers) for _ in range(20)]
        assert all(r.status_code == 503 for r in outage), [r.status_code for r in outage]
        assert all(r.json()["error"]["code"] for r in outage)
        restarted = _restart_opa(local_stack, argv)
        try:
            assert wait_for(
                lambda: client.post("/predict", json=body, headers=headers).status_code == 200,
                timeout=60,
            ), "the service did not recover after OPA came back"
        finally:
            # Leave the restarted OPA running for the rest of the session; `ztml down`
            # stops the original process group only, so stop this one at exit.
            import atexit

            atexit.register(lambda: os.killpg(restarted, signal.SIGTERM))
    assert wait_for(lambda: _requests_audited(local_stack.home) >= before + 22, timeout=10)
    outage_events = [
        e
        for e in audit_events(local_stack.home)
        if e.get("subject") == "during-outage" and e.get("kind") == "request"
    ]
    assert sum(1 for e in outage_events if e["status"] == 503) >= 20


@pytest.mark.disruptive
def test_audit_log_verifies_after_the_attacks(local_stack: LocalStack):
    time.sleep(0.5)
    result = local_stack.ztml("audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
