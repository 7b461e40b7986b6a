"""Adversarial inputs, an OPA outage and a burst: each answered and each audited."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.toolchain.opa import OPA_SERVER_ENV
from tests.service.app.harness import (
    Stack,
    audit_events,
    digit_rows,
    events_for,
    restart_opa,
    wait_for,
)

pytestmark = pytest.mark.system


def pgd_rows(stack: Stack, count: int, *, eps: float) -> list[list[float]]:
    import torch

    from service.model.artifact import load_model
    from service.model.attacks import pgd
    from service.model.data import load_splits

    splits = load_splits()
    model = load_model(stack.model_path)
    x = torch.from_numpy(splits.x_test[:count].copy())
    y = torch.from_numpy(splits.y_test[:count].copy())
    x_adv = pgd(model, x, y, eps=eps, steps=20)
    return [[float(v) for v in row] for row in x_adv.detach().numpy()]


def flagged_rate(stack: Stack, rows: list[list[float]], sub: str) -> float:
    response = httpx.post(
        f"{stack.url}/predict",
        json={"instances": rows},
        headers=stack.headers(sub),
        timeout=60,
        verify=stack.tls,
    )
    assert response.status_code == 200, response.text
    return float(np.mean([p["flagged"] for p in response.json()["predictions"]]))


def test_pgd_inputs_are_flagged_more_often_than_clean_ones(stack: Stack) -> None:
    clean = flagged_rate(stack, digit_rows(60), "clean-client")
    adversarial = flagged_rate(stack, pgd_rows(stack, 60, eps=0.2), "pgd-client")
    print(f"flagged: clean {clean:.1%}, PGD eps=0.2 {adversarial:.1%}")
    assert clean <= 0.15
    assert adversarial >= clean + 0.2


def test_flagged_request_is_queued_for_review(stack: Stack) -> None:
    from service.review import ReviewQueue

    response = httpx.post(
        f"{stack.url}/predict",
        json={"instances": pgd_rows(stack, 20, eps=0.3)},
        headers=stack.headers("reviewed"),
        timeout=60,
        verify=stack.tls,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["flagged"] and body["review_id"] is not None
    item = ReviewQueue(stack.home / "review.db").get(body["review_id"])
    assert item.request_id == body["request_id"]


def opa_command(stack: Stack) -> list[str]:
    from service.stack.runner import opa_command as command
    from service.toolchain.opa import find_opa

    return command(find_opa(), stack.opa_port, socket=stack.opa_socket)


def opa_healthy(stack: Stack) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{stack.opa_port}/health").status_code == 200
    except httpx.HTTPError:
        return False


def test_opa_outage_denies_with_503_and_recovers_without_restart(stack: Stack) -> None:
    from service.stack.processes import stop_group

    headers = stack.headers("outage")
    body = {"instances": digit_rows(1)}
    assert (
        httpx.post(f"{stack.url}/predict", json=body, headers=headers, verify=stack.tls).status_code
        == 200
    )
    stop_group(stack.opa_pid)
    try:
        during = [
            httpx.post(f"{stack.url}/predict", json=body, headers=headers, verify=stack.tls)
            for _ in range(4)
        ]
        assert [r.status_code for r in during] == [503] * 4
        for response in during:
            assert response.json()["error"]["code"] == "policy_unavailable"
            events = events_for(stack.home, response.headers["x-request-id"])
            assert sorted(e["kind"] for e in events) == ["policy_decision", "request"]
            decision = next(e for e in events if e["kind"] == "policy_decision")
            assert decision["decision"]["allow"] is False and decision["status"] == 503
    finally:
        stack.opa_pid = restart_opa(
            opa_command(stack),
            socket_path=stack.opa_socket,
            log=stack.home / "logs" / "opa-restarted.log",
            env={**os.environ, **OPA_SERVER_ENV},
        )
    assert wait_for(lambda: opa_healthy(stack))
    after = httpx.post(f"{stack.url}/predict", json=body, headers=headers, verify=stack.tls)
    assert after.status_code == 200, after.text
    os.kill(stack.service_pid, 0)  # the same service process served throughout


async def burst(stack: Stack, count: int) -> list[httpx.Response]:
    good = stack.headers("burst")
    bad_body = {"instances": [[2.0] * 64]}
    async with httpx.AsyncClient(base_url=stack.url, timeout=60, verify=stack.tls) as client:
        calls = []
        for i in range(count):
            if i % 4 == 0:
                calls.append(client.post("/predict", json={"instances": digit_rows(1)}))
            elif i % 4 == 1:
                calls.append(client.post("/predict", json=bad_body, headers=good))
            else:
                calls.append(
                    client.post("/predict", json={"instances": digit_rows(2)}, headers=good)
                )
        return list(await asyncio.gather(*calls))


def test_every_request_of_a_burst_is_audited_once(stack: Stack) -> None:
    before = Counter(e["kind"] for e in audit_events(stack.home))["request"]
    responses = asyncio.run(burst(stack, 40))
    events = audit_events(stack.home)
    assert Counter(e["kind"] for e in events)["request"] - before == len(responses)
    audited = Counter(e["request_id"] for e in events if e["kind"] == "request")
    for response in responses:
        assert audited[response.headers["x-request-id"]] == 1
    assert {r.status_code for r in responses} >= {401, 422}


def test_audit_log_verifies_after_the_traffic(stack: Stack) -> None:
    httpx.post(
        f"{stack.url}/predict",
        json={"instances": digit_rows(1)},
        headers=stack.headers("last"),
        verify=stack.tls,
    )
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ztml"), "audit", "verify"],
        env={**os.environ, "ZTML_HOME": str(stack.home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact" in result.stdout
