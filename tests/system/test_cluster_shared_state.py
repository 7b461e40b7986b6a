"""A scaled-out stack on the cluster: its replicas share one limit, one history, one queue.

Runs only against a session stack (``cluster_stack``) deployed with ``replicas`` >= 2; with
one replica every case is skipped, saying so. The calls go from a labelled client pod
through the Service, so kube-proxy spreads them over the replicas; each replica reads and
writes the monitor state in the stack's PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.service.app.harness import digit_rows
from tests.system.cluster_clients import SERVICE_URL, client_pod, predict, send
from tests.system.cluster_stack import NAMESPACE, WORKLOAD, ClusterStack

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def scaled(cluster_stack: ClusterStack) -> ClusterStack:
    """The deployed stack, if it runs at least two replicas."""
    replicas = int(cluster_stack.config().get("replicas", "1"))
    if replicas < 2:
        pytest.skip(f"the deployed stack runs {replicas} replica; these cases need 2 or more")
    assert len(cluster_stack.model_pods()) >= 2
    return cluster_stack


@pytest.fixture(scope="module")
def client(scaled: ClusterStack) -> str:
    return client_pod(scaled, "ztml-test-client", labelled=True)


def _in_model_pod(stack: ClusterStack, pod: str, *command: str) -> Any:
    proc = stack.cluster.kubectl("-n", NAMESPACE, "exec", pod, "-c", "model", "--", *command)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_replica_uses_the_shared_store(scaled: ClusterStack) -> None:
    for pod in scaled.model_pods():
        env = _in_model_pod(scaled, pod, "printenv", "ZTML_MONITOR_URL")
        assert env.strip() == "postgresql://?service=ztml", pod


def test_replicas_together_admit_one_burst(scaled: ClusterStack, client: str) -> None:
    """A viewer's requests, spread over the replicas, are limited as if by one replica."""
    token = scaled.token("shared-burst", roles=("viewer",))
    metadata = {"url": f"{SERVICE_URL}/metadata"}
    plan = [{**metadata, "headers": {"Authorization": f"Bearer {token}"}}] * 120
    statuses = [a["status"] for a in send(scaled, client, plan)]
    admitted = statuses.count(200)
    # The burst (ZTML_RATE_BURST, 30 by default) plus what refills during the run; a
    # bucket per replica would admit about N times the burst.
    assert 429 in statuses, statuses
    assert admitted <= 30 + 10, (admitted, statuses)


def test_an_extraction_sequence_spread_over_replicas_is_refused(
    scaled: ClusterStack, client: str
) -> None:
    rng = np.random.default_rng(12)
    seeds = np.asarray(digit_rows(3, start=80))
    rows = [np.clip(seeds[i % 3] + rng.normal(0, 0.02, 64), 0, 1).tolist() for i in range(45)]
    token = scaled.token("cluster-shared-extractor", roles=("predictor",))
    plan = [{**predict(token, [row]), "pause": 0.35} for row in rows]
    statuses = [a["status"] for a in send(scaled, client, plan)]
    # With a history per replica, each would see 1/N of the queries and flag later or never.
    first = next((i for i, s in enumerate(statuses) if s == 403), None)
    assert first is not None, f"the sequence was never refused: {statuses}"
    assert all(s == 403 for s in statuses[first:]), statuses


def test_review_list_in_any_replica_shows_the_one_queue(scaled: ClusterStack) -> None:
    pods = scaled.model_pods()
    listings = [
        json.loads(
            _in_model_pod(scaled, pod, "ztml", "review", "list", "--status", "all", "--json")
        )
        for pod in pods
    ]
    ids = [[item["id"] for item in listing] for listing in listings]
    assert all(seen == ids[0] for seen in ids), ids
    deployment = _in_model_pod(
        scaled, f"deploy/{WORKLOAD}", "ztml", "review", "list", "--status", "all", "--json"
    )
    assert [item["id"] for item in json.loads(deployment)] == ids[0]
